"""Two hub nodes on one real Redis and one real PostgreSQL: a stream recorded on node A is
watched on node B (B asks A for its ring, then follows the stream's topic), annotations
cross nodes, and the recorder moving to node B mid-stream loses nothing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clients.eeg import Recorder
from clients.eeg_view import Viewer
from media.eeg.synth import synthetic_meta
from tests.chat.test_two_nodes import SECRETS
from tests.eeg.helpers import EXAM, FAST, WAIT_S, auth, digest, principals, seed_exam, source
from tests.hubtest import RunningHub, hub_settings, run_hub
from tests.pg import PostgresServer, fresh_database, start_postgres
from tests.services import start_redis

__all__ = ["start_postgres"]
RATE = 256


@contextlib.asynccontextmanager
async def two_nodes(
    tmp_path: Path, pg: PostgresServer
) -> AsyncIterator[tuple[RunningHub, RunningHub]]:
    redis = start_redis(tmp_path / "redis")
    try:
        url = await fresh_database(pg)
        common: dict[str, Any] = {
            "broker": "redis",
            "redis_url": redis.url,
            "database_url": url,
            **SECRETS,
            **FAST,
        }
        a_settings = hub_settings(tmp_path / "a", node_id="node-a", **common)
        b_settings = hub_settings(tmp_path / "b", node_id="node-b", **common)
        async with run_hub(a_settings, principals()) as a:
            keys = a.components.capabilities.get("eeg").keys  # type: ignore[attr-defined]
            await seed_exam(a.components.database, keys)
            async with run_hub(b_settings, principals()) as b:
                yield a, b
    finally:
        redis.stop()


@pytest.fixture
async def nodes(
    tmp_path: Path, start_postgres: PostgresServer
) -> AsyncIterator[tuple[RunningHub, RunningHub]]:
    async with two_nodes(tmp_path, start_postgres) as pair:
        yield pair


async def test_a_stream_recorded_on_one_node_is_watched_on_another(
    nodes: tuple[RunningHub, RunningHub],
) -> None:
    a, b = nodes
    data = source(60)
    rec = Recorder(a.url, auth("u-tech"), EXAM, synthetic_meta(21, RATE), frame_samples=64)
    sid = await rec.start()
    await rec.write(data[: 20 * RATE])
    on_b = Viewer(b.url, auth("u-int1"), sid, backfill_s=600)
    await on_b.start()  # B fills its ring from A's, then follows the topic
    relay_a: Any = a.components.capabilities.get("eeg").relay  # type: ignore[attr-defined]
    assert relay_a.served == 1
    assert on_b.floor == 0
    await rec.write(data[20 * RATE : 30 * RATE])
    await on_b.wait_until(30 * RATE, timeout_s=WAIT_S)
    assert digest(on_b.data(0, 30 * RATE)) == digest(data[: 30 * RATE])

    # annotations cross nodes: the technician on A, the interpreter on B
    on_a = Viewer(a.url, auth("u-int2"), sid, backfill_s=600)
    await on_a.start()
    await rec.annotate(100, "eyes closed", kind="eyes_closed")
    await on_b.sock.request("eeg.annotate", stream=sid, client_id="b1", onset=200, text="spike")
    for v in (on_a, on_b):
        await v.wait_for(lambda v=v: len(v.annotations) == 2, WAIT_S)
        assert sorted(x["text"] for x in v.annotations.values()) == ["eyes closed", "spike"]

    # the recorder's connection lands on node B: B takes the stream over, A stops writing it
    rec.url = b.url
    rec.kill_socket()
    await rec.write(data[30 * RATE :])
    await rec.wait_acked(timeout_s=WAIT_S)
    eeg_a: Any = a.components.capabilities.get("eeg")
    eeg_b: Any = b.components.capabilities.get("eeg")
    assert rec.number in eeg_b.recordings
    for v in (on_a, on_b):
        await v.wait_until(len(data), timeout_s=WAIT_S)
        assert v.cov.intervals() == [(0, len(data))]
        assert digest(v.data(0, len(data))) == digest(data)
        assert v.duplicates == 0
    assert await rec.close(timeout_s=WAIT_S) == len(data)
    assert rec.number not in eeg_a.recordings
    for v in (on_a, on_b):
        await v.stop()
