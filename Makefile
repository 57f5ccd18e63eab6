# medhub: the two commands (make run, make test) and the benchmarks (make bench).
# Every target sets itself up: .venv is created or updated only when pyproject.toml
# or constraints.txt changed since the last time.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test lint typecheck pytest bench clean services

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.stamp-run: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[calls]'
	touch $@

$(VENV)/.stamp-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -c constraints.txt -e '.[dev,redis,postgresql,bench,calls]'
	touch $(VENV)/.stamp-run $@

## make run: set up, migrate, and serve on $(HOST):$(PORT) (SQLite under ./var, in-memory broker),
## with the test-call echo peer beside the hub (aiortc, installed by the calls extra)
ECHO_CREDENTIALS ?= $(or $(MEDHUB_DATA_DIR),var)/echo-peer.json
run: $(VENV)/.stamp-run
	$(BIN)/medhub migrate
	@echo_id=$$($(BIN)/medhub calls echo-account --credentials $(ECHO_CREDENTIALS)) || exit 1; \
	peer=""; \
	if $(BIN)/python -c 'import aiortc' 2>/dev/null; then \
	  $(BIN)/medhub-call --server http://$(HOST):$(PORT) --credentials $(ECHO_CREDENTIALS) echo & \
	  peer=$$!; \
	else \
	  echo "make run: no test-call echo peer (aiortc missing: pip install -e '.[calls]')" >&2; \
	fi; \
	trap '[ -n "$$peer" ] && kill $$peer 2>/dev/null; exit 130' INT TERM; \
	trap '[ -n "$$peer" ] && kill $$peer 2>/dev/null' EXIT; \
	MEDHUB_CALLS_ECHO_USERS=$$echo_id $(BIN)/medhub serve --host $(HOST) --port $(PORT)

## make test: set up, start the real services the suite needs, lint, type-check, run everything
test: $(VENV)/.stamp-dev services lint typecheck pytest

services:
	@sh .ci/services.sh

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check protocol server media clients loadtests tests
	$(BIN)/ruff format --check protocol server media clients loadtests tests

typecheck: $(VENV)/.stamp-dev
	$(BIN)/mypy

pytest: $(VENV)/.stamp-dev
	$(BIN)/pytest

## make bench: the benchmarks, written to docs/benchmarks.md
bench: $(VENV)/.stamp-dev
	$(BIN)/python -m loadtests.bench --write docs/benchmarks.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
