"""Only the exam's people stream or watch; every refusal and subscription is audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from clients.eeg import EegError, HubSocket, Recorder
from clients.eeg_view import Viewer
from media.eeg.synth import synthetic_meta
from server.store.db import Database
from server.store.schema import audit_log
from tests.eeg.helpers import EXAM, WAIT_S, auth, eeg_hub, source


async def audit_rows(hub: Any) -> list[Any]:
    await hub.components.audit.flush()
    db: Database = hub.components.database
    async with db.begin(readonly=True) as conn:
        return list(await conn.execute(sa.select(audit_log).order_by(audit_log.c.seq)))


async def test_an_unassigned_interpreter_is_refused_and_the_refusal_audited(tmp_path: Path) -> None:
    async with eeg_hub(tmp_path) as hub:
        rec = Recorder(hub.url, auth("u-tech"), EXAM, synthetic_meta(4, 128))
        sid = await rec.start()
        await rec.write(source(2, channels=4, rate=128))
        stranger = Viewer(hub.url, auth("u-stranger"), sid)
        with pytest.raises(EegError) as info:
            await stranger.start()
        assert info.value.code == "forbidden"
        await stranger.stop()
        sock = await HubSocket.open(hub.url, auth("u-stranger"))
        for msg_type, fields in (
            ("eeg.backfill", {"first": 0, "end": 10}),
            ("eeg.annotate", {"onset": 0, "text": "x", "client_id": "c1"}),
            ("eeg.annotations", {}),
        ):
            with pytest.raises(EegError) as info:
                await sock.request(msg_type, stream=sid, **fields)
            assert info.value.code == "forbidden"
        # an interpreter of the exam may watch but not stream; another org is not found
        far = await HubSocket.open(hub.url, auth("u-far"))
        with pytest.raises(EegError) as info:
            await far.request("eeg.watch", stream=sid)
        assert info.value.code == "forbidden"
        interp = await HubSocket.open(hub.url, auth("u-int1"))
        with pytest.raises(EegError) as info:
            meta = msgspec.to_builtins(synthetic_meta(4, 128))
            await interp.request("eeg.open", exam=EXAM, meta=meta)
        assert info.value.code == "forbidden"
        ok = await interp.request("eeg.watch", stream=sid)
        assert ok["stream"] == sid
        for s in (sock, far, interp):
            await s.close()

        rows = await audit_rows(hub)
        denied = [
            (r.actor, r.target_type, r.target_id, r.reason) for r in rows if r.action == "denied"
        ]
        assert ("u-stranger", "eeg_stream", sid, "not_assigned") in denied
        assert sum(1 for d in denied if d[0] == "u-stranger") == 4  # watch + the three requests
        assert ("u-far", "eeg_stream", sid, "other_org") in denied
        assert ("u-int1", "eeg_exam", EXAM, "not_exam_technician") in denied
        subs = [(r.actor, r.target_id) for r in rows if r.action == "subscribe"]
        assert subs == [("u-int1", sid)]  # the only watch allowed
        created = [(r.actor, r.target_type) for r in rows if r.action == "create"]
        assert ("u-tech", "eeg_stream") in created
        await rec.close(timeout_s=WAIT_S)
