"""A hub killed with SIGKILL in the middle of a recording: the export opens in pyedflib and
MNE with at most one second missing and every acknowledged annotation kept; the recorder
then resumes on the restarted hub and the recording ends complete."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pyedflib
import pytest

from clients.eeg import Recorder, TokenAuth
from media.eeg.synth import SyntheticEeg
from server import policy
from server.config import ensure_secrets, load_settings
from server.eeg import store
from server.eeg.export import export_stream
from server.security.at_rest import settings_keyring
from server.store.db import Database
from tests.accountstest import FakeClock, accounts_env, enrol
from tests.eeg.test_export import read_mne
from tests.server.serveproc import BANNER, Child, medhub_env, run
from tests.services import free_port

RATE = 256
FRAME = 32  # 1/8 s
EXAM = "e-00000000000000000c1"


def start(data_dir: Path, port: int) -> Child:
    child = Child(["serve", "--port", str(port)], medhub_env(data_dir))
    child.out.wait_for(BANNER, 60)
    return child


async def export(data_dir: Path, out: Path) -> tuple[str, int]:
    settings = ensure_secrets(load_settings(environ={}, overrides={"data_dir": str(data_dir)}))
    keys = settings_keyring(settings)
    async with Database(settings.effective_database_url) as db:
        streams = await db.run(lambda c: store.streams_of(c, [EXAM]), readonly=True)
        (row,) = streams[EXAM]
        done = await export_stream(db, keys, row.id, out)
    return row.id, done.samples


@pytest.mark.slow
async def test_sigkill_mid_recording_loses_at_most_a_second_and_no_annotation(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    run(["migrate"], medhub_env(data_dir))
    url = f"sqlite+aiosqlite:///{data_dir / 'medhub.db'}"
    async with accounts_env(tmp_path, db_url=url, data_dir=str(data_dir)) as acc:
        acc.clock = FakeClock(time.time())
        acc.accounts.service.clock = acc.clock
        org = await acc.accounts.service.store.create_org("clinic", acc.accounts.service.now_us())
        async with acc.client() as http:
            tech = await enrol(http, acc.accounts, org.id, "technician", "t@x.org", acc.clock())
        people = policy.Exam(EXAM, org.id, "u-p", "u-d", tech.user_id, frozenset({"u-i"}))
        keys = settings_keyring(acc.settings)
        row = store.ExamRow(people, "planned", "", 1, 1, 1)
        await acc.db.run(lambda c: store.create_exam(c, keys, row, None))

    synth = SyntheticEeg(21, RATE, seed=9)
    data = synth.read(RATE * 6)
    port = free_port()
    child = start(data_dir, port)
    try:
        rec = Recorder(
            f"ws://127.0.0.1:{port}/ws",
            TokenAuth(tech.token),
            EXAM,
            synth.meta,
            frame_samples=FRAME,
        )
        await rec.start()
        notes = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for k in range(0, 3 * RATE, FRAME):  # three seconds, in real time
            await rec.write(data[k : k + FRAME])
            if k % RATE == 0:
                notes.append((k, await rec.annotate(k, f"mark {k}", kind="event")))
            await asyncio.sleep(max(0.0, t0 + (k + FRAME) / RATE - loop.time()))
        sent_at_kill = rec.end
        os.kill(child.proc.pid, signal.SIGKILL)  # samples and maybe a write in flight
        child.wait(10)
    finally:
        child.stop()

    out = tmp_path / "after-kill.edf"  # with the command line, as support would
    env = medhub_env(data_dir)
    (listed,) = json.loads(run(["eeg", "streams", EXAM], env).stdout)
    done = json.loads(run(["eeg", "export", listed["id"], str(out)], env).stdout)
    stored = done["samples"]
    assert stored >= sent_at_kill - RATE  # at most one second missing
    f = pyedflib.EdfReader(str(out))
    try:
        back = np.stack([f.readSignal(i, digital=True) for i in range(21)], axis=1)[:stored]
        assert np.array_equal(back, data[:stored])
        texts = list(f.readAnnotations()[2])
    finally:
        f.close()
    assert sorted(texts) == sorted(f"event: mark {k}" for k, _ in notes)  # every one kept
    raw = read_mne(out)
    assert raw.ch_names[:3] == ["Fp1", "Fp2", "F7"]
    assert raw.info["sfreq"] == RATE
    assert len(raw.annotations) == len(notes)

    # the hub comes back; the recorder, which kept what was not acknowledged, resumes
    child = start(data_dir, port)
    try:
        await rec.write(data[3 * RATE :])
        end = await rec.close(timeout_s=60)
        assert end == len(data)
        child.proc.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    finally:
        child.stop()
    out = tmp_path / "complete.edf"
    _sid, stored = await export(data_dir, out)
    assert stored == len(data)
    f = pyedflib.EdfReader(str(out))
    try:
        back = np.stack([f.readSignal(i, digital=True) for i in range(21)], axis=1)[:stored]
        assert np.array_equal(back, data)
    finally:
        f.close()
