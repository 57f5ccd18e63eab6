"""A hub with seeded accounts (as the chat tests): org-a (alice, bob, carol: practitioners;
sam: secretary of alice; pat: patient of alice, consultation k1), org-b (dave)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.chat.conftest import CARE, DELEGATED, PEOPLE
from tests.chat.helpers import principals, seed
from tests.hubtest import RunningHub, hub_settings, run_hub

CALL_SETTINGS = {
    "ws_rate_per_s": 100000.0,
    "ws_rate_burst": 100000,
    "calls_ring_timeout_s": 1.0,
    "calls_grace_s": 1.0,
}


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[RunningHub]:
    settings = hub_settings(tmp_path, **CALL_SETTINGS)
    async with run_hub(settings, principals(PEOPLE)) as running:
        await seed(running.components.database, PEOPLE, care=CARE, delegated=DELEGATED)
        yield running
