"""Requests through a reverse proxy that is not in ``trusted_proxies`` are reported once."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from protocol.codec import SUBPROTOCOL_JSON
from tests.accountstest import accounts_settings, run_accounts_hub

FORWARDED = {"x-forwarded-for": "203.0.113.9"}
ATTEMPT = {"email": "nobody@a.example", "password": "Wrong-password-1"}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "trusted_proxies" in r.getMessage()
    ]


async def test_an_untrusted_proxy_is_reported_once_without_addresses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings = accounts_settings(tmp_path)
    async with run_accounts_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api) as http:
        r = await http.post("/login", json=ATTEMPT)  # a direct client: nothing to say
        assert r.status_code == 401
        assert _warnings(caplog) == []
        for _ in range(3):
            r = await http.post("/login", json=ATTEMPT, headers=FORWARDED)
            assert r.status_code == 401
    found = _warnings(caplog)
    assert len(found) == 1
    text = found[0].getMessage()
    assert "203.0.113.9" not in text
    assert "127.0.0.1" not in text


async def test_a_websocket_through_an_untrusted_proxy_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    hello = {"type": "hello", "id": "h", "auth": {"method": "token", "token": "x" * 43}}
    async with (
        run_accounts_hub(accounts_settings(tmp_path)) as hub,
        connect(
            hub.url,
            subprotocols=[SUBPROTOCOL_JSON],  # type: ignore[list-item]
            additional_headers=FORWARDED,
        ) as ws,
    ):
        await ws.send(json.dumps(hello))
        await ws.recv()  # the hello was answered: the address was computed before
    assert len(_warnings(caplog)) == 1


async def test_a_trusted_proxy_is_not_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings = accounts_settings(tmp_path, trusted_proxies=["127.0.0.1"])
    async with run_accounts_hub(settings) as hub, httpx.AsyncClient(base_url=hub.api) as http:
        r = await http.post("/login", json=ATTEMPT, headers=FORWARDED)
        assert r.status_code == 401
    assert _warnings(caplog) == []
