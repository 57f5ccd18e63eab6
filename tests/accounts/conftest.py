"""Accounts fixtures: ``env`` is an accounts stack on SQLite with a fake clock and an org."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.accountstest import Env, accounts_env
from tests.pg import db_url, start_postgres

__all__ = ["db_url", "start_postgres"]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with accounts_env(tmp_path) as e:
        yield e


@pytest.fixture
async def org_id(env: Env) -> str:
    return (await env.accounts.admin.create_org(None, "Clinique A")).id
