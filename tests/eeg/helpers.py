"""EEG test helpers: a hub with an exam seeded, recorder and viewer clients, source data."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from clients.eeg import TokenAuth
from media.eeg.synth import SyntheticEeg
from server import policy
from server.eeg import store
from server.security.crypto import Keyring
from server.store.db import Database
from tests.hubtest import RunningHub, hub_settings, principal, run_hub, token_for

ORG = "org-a"
PEOPLE = {
    "u-tech": (ORG, "technician"),
    "u-doc": (ORG, "practitioner"),
    "u-int1": (ORG, "interpreter"),
    "u-int2": (ORG, "interpreter"),
    "u-stranger": (ORG, "interpreter"),  # an interpreter of the organisation, not assigned
    "u-pat": (ORG, "patient"),
    "u-far": ("org-b", "interpreter"),
}
EXAM = "e-00000000000000000001"
#: Generous limits: the tests stream faster than real time.
FAST = {
    "ws_rate_per_s": 100000.0,
    "ws_rate_burst": 100000,
    "ws_stream_rate_per_s": 100000.0,
    "ws_stream_rate_burst": 100000,
}
WAIT_S = 20.0


def principals() -> dict[str, Any]:
    return {u: principal(u, org, role) for u, (org, role) in PEOPLE.items()}


def auth(user: str) -> TokenAuth:
    return TokenAuth(token_for(user))


async def seed_exam(
    db: Database,
    keys: Keyring,
    exam_id: str = EXAM,
    interpreters: tuple[str, ...] = ("u-int1", "u-int2"),
) -> None:
    people = policy.Exam(exam_id, ORG, "u-pat", "u-doc", "u-tech", frozenset(interpreters))
    row = store.ExamRow(people, "planned", "routine EEG", 1, 1, 1)
    await db.run(lambda c: store.create_exam(c, keys, row, None))


@contextlib.asynccontextmanager
async def eeg_hub(tmp_path: Path, **overrides: Any) -> AsyncIterator[RunningHub]:
    """A hub (test tokens for PEOPLE) with the exam seeded."""
    settings = hub_settings(tmp_path, **{**FAST, **overrides})
    async with run_hub(settings, principals()) as hub:
        c = hub.components
        await seed_exam(c.database, hub.components.capabilities.get("eeg").keys)  # type: ignore[attr-defined]
        yield hub


def source(
    seconds: float, channels: int = 21, rate: int = 256, seed: int = 1
) -> npt.NDArray[np.int16]:
    """``seconds`` of synthetic EEG (digital int16)."""
    return SyntheticEeg(channels, rate, "int16", seed=seed).read(int(seconds * rate))  # type: ignore[return-value]


def digest(arr: npt.NDArray[np.generic]) -> str:
    """The hash of an integer payload, as the recorder sent it."""
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
