"""A hub with seeded accounts: org-a (alice, bob, carol: practitioners; sam: secretary
of alice; pat: patient of alice, consultation k1), org-b (dave: practitioner)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.chat.helpers import principals, seed
from tests.hubtest import RunningHub, hub_settings, run_hub

PEOPLE = {
    "alice": ("org-a", "practitioner"),
    "bob": ("org-a", "practitioner"),
    "carol": ("org-a", "practitioner"),
    "sam": ("org-a", "secretary"),
    "pat": ("org-a", "patient"),
    "dave": ("org-b", "practitioner"),
}
CARE = [("consultation", "alice", "pat", "k1"), ("follows", "alice", "pat", None)]
DELEGATED = [("alice", "sam", "consultations")]


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[RunningHub]:
    settings = hub_settings(tmp_path, ws_rate_per_s=100000.0, ws_rate_burst=100000)
    async with run_hub(settings, principals(PEOPLE)) as running:
        await seed(running.components.database, PEOPLE, care=CARE, delegated=DELEGATED)
        yield running
