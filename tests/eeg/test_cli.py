"""``medhub-eeg`` as a technician and an interpreter run it: the installed script, a real hub.

A real EDF+ recording streamed with ``record --edf`` comes back from ``view --out``
with the same digital values and its notes; a view of its last minutes holds only
those minutes and the notes in them; someone not on the exam, or whose session has
ended, is refused in one line; an unreadable file is named as such; a synthetic
recording of two seconds is stored whole (``medhub eeg export``), and the viewer's file
and the hub's export of a recording with eyes events agree.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import numpy as np
import pyedflib

from media.eeg.edf import onset_samples, read_edf
from media.eeg.synth import SyntheticEeg
from tests.clients.clitest import cli_env
from tests.eeg.helpers import EXAM, eeg_hub
from tests.hubtest import RunningHub, token_for
from tests.server.serveproc import medhub_env

BIN = Path(sys.executable).parent
EEG = str(BIN / "medhub-eeg")
MEDHUB = str(BIN / "medhub")
REAL = Path(pyedflib.__file__).parent / "tests" / "data" / "test_subsecond.edf"
WAIT_S = 120.0  # bound on one command (698 s of EEG sent as fast as the hub takes it)


async def run(env: dict[str, str], program: str, *args: str) -> tuple[int, str, str]:
    """Run ``program`` to its end (no terminal, no stdin); exit status, stdout, stderr."""
    child = await asyncio.create_subprocess_exec(
        program, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(child.communicate(), WAIT_S)
    except TimeoutError:
        child.kill()
        await child.wait()
        raise
    assert child.returncode is not None
    return child.returncode, out.decode(), err.decode()


async def ok(env: dict[str, str], *args: str) -> str:
    """Run ``medhub-eeg ARGS``; assert it succeeded with nothing on stderr; its stdout."""
    status, out, err = await run(env, EEG, *args)
    assert status == 0, f"{args}: exit {status}\n{out}\n{err}"
    assert err == "", err
    return out


def signed_in(hub: RunningHub, user: str) -> list[str]:
    """The options of a person who passes the session token (the test hub has no tickets)."""
    return ["--server", hub.http, "--token", token_for(user), "--no-ticket"]


def stream_of(out: str) -> str:
    found = re.search(r"^streaming (t-\S+) \(", out, re.MULTILINE)
    assert found, out
    return found.group(1)


async def test_a_real_edf_recorded_and_viewed_comes_back_the_same(tmp_path: Path) -> None:
    real = read_edf(REAL)  # one real channel (Fp1, 128 Hz, inverted range), 698 s, 4 notes
    rate, n = real.meta.rate, real.samples.shape[0]
    whole, last = tmp_path / "received.edf", tmp_path / "last.edf"
    async with eeg_hub(tmp_path) as hub:
        # the interpreter signed in with medhub-chat: the saved default profile
        env = cli_env(tmp_path, server=hub.http, token=token_for("u-int1"))
        out = await ok(
            env, *signed_in(hub, "u-tech"), "record", "--exam", EXAM, "--edf", str(REAL),
            "--speed", "0",
        )  # fmt: skip
        sid = stream_of(out)
        assert f"streaming {sid} (1 channels, 128 Hz, int16)" in out
        assert f"{sid}: closed at sample {n}" in out
        seen = await ok(
            env, "--no-ticket", "view", "--stream", sid, "--out", str(whole), "--backfill-s", "3600"
        )
        assert f"held {n} samples from 0; duplicates 0" in seen
        assert f"wrote {whole}" in seen
        # the last 200 s only: the file starts there, with the one note that falls in it
        seen = await ok(
            env, "--no-ticket", "view", "--stream", sid, "--out", str(last), "--backfill-s", "200"
        )
        assert f"held {200 * rate} samples from {n - 200 * rate}" in seen

    back = read_edf(whole)
    assert [c.label for c in back.meta.channels] == ["Fp1"]
    assert back.meta.rate == rate
    assert back.meta.channels[0].physical_max == real.meta.channels[0].physical_max
    assert np.array_equal(back.samples, real.samples)  # every digital value, nothing more
    assert [a.text for a in back.annotations] == [a.text for a in real.annotations]
    for got, sent in zip(back.annotations, real.annotations, strict=True):
        assert abs(got.onset_s - sent.onset_s) <= 0.5 / rate + 1e-4  # within half a sample
        assert got.duration_s == sent.duration_s

    tail = read_edf(last)
    assert np.array_equal(tail.samples, real.samples[n - 200 * rate :])
    (note,) = tail.annotations
    assert note.text == real.annotations[-1].text
    expected = (onset_samples(real.annotations[-1].onset_s, rate) - (n - 200 * rate)) / rate
    assert abs(note.onset_s - expected) < 1e-4


async def test_someone_not_on_the_exam_is_refused_in_one_line(tmp_path: Path) -> None:
    received = tmp_path / "received.edf"
    async with eeg_hub(tmp_path) as hub:
        env = cli_env(tmp_path)
        out = await ok(
            env, *signed_in(hub, "u-tech"), "record", "--exam", EXAM, "--synthetic",
            "--channels", "4", "--rate", "128", "--seconds", "1", "--speed", "0", "--keep-open",
        )  # fmt: skip
        sid = stream_of(out)
        assert f"{sid}: 128 samples stored; left open" in out
        # a session that has ended, saved by medhub-chat: the ticket is refused
        ended = cli_env(tmp_path / "ended", server=hub.http, token="revoked-session-token-000")
        for who, who_env, args, code in (
            ("not assigned", env, [*signed_in(hub, "u-stranger"), "view", "--stream", sid,
             "--out", str(received)], "forbidden"),
            ("reads only", env, [*signed_in(hub, "u-int1"), "record", "--exam", EXAM,
             "--seconds", "1", "--speed", "0"], "forbidden"),
            ("signed out", ended, ["view", "--stream", sid, "--out", str(received)],
             "unauthenticated"),
        ):  # fmt: skip
            status, out, err = await run(who_env, EEG, *args)
            assert status == 1, f"{who}: exit {status}\n{out}\n{err}"
            assert "Traceback" not in err, err
            lines = err.strip().splitlines()
            assert len(lines) == 1, err
            assert lines[0].startswith(f"medhub-eeg: refused: {code}"), err
    assert not received.exists()


async def test_an_unreadable_edf_file_is_named_not_taken_for_a_lost_connection(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere.edf"
    not_edf = tmp_path / "notes.edf"
    not_edf.write_text("this is not an EDF file\n")
    env = cli_env(tmp_path)
    for path in (missing, not_edf):
        status, out, err = await run(
            env, EEG, "--server", "http://127.0.0.1:9", "--token", token_for("u-tech"),
            "--no-ticket", "record", "--exam", EXAM, "--edf", str(path),
        )  # fmt: skip
        assert status == 2, f"exit {status}\n{out}\n{err}"
        assert "Traceback" not in err, err
        (line,) = err.strip().splitlines()
        assert line.startswith(f"medhub-eeg: cannot read {path}: "), err
        assert out == ""


async def test_two_synthetic_seconds_are_stored_whole(tmp_path: Path) -> None:
    async with eeg_hub(tmp_path) as hub:
        env = cli_env(tmp_path)
        out = await ok(
            env, *signed_in(hub, "u-tech"), "record", "--exam", EXAM, "--synthetic",
            "--channels", "4", "--rate", "128", "--seconds", "2", "--speed", "0",
        )  # fmt: skip
        sid = stream_of(out)
        assert f"streaming {sid} (4 channels, 128 Hz, int16)" in out
        assert f"{sid}: closed at sample 256" in out

    # the hub has stopped; support exports the recording with the server's command line
    exported = tmp_path / "export.edf"
    status, out, err = await run(
        medhub_env(tmp_path / "var"), MEDHUB, "eeg", "export", sid, str(exported)
    )
    assert status == 0, f"exit {status}\n{out}\n{err}"
    done = json.loads(out)
    assert done["samples"] == 256
    assert done["gaps"] == 0
    f = pyedflib.EdfReader(str(exported))
    try:
        assert list(f.getNSamples()) == [256] * 4
        back = np.stack([f.readSignal(i, digital=True) for i in range(4)], axis=1)
    finally:
        f.close()
    sent = SyntheticEeg(4, 128, "int16", seed=0).read(256)  # the CLI's source (--seed 0)
    assert np.array_equal(back, sent)


async def test_the_viewers_file_and_the_hubs_export_agree(tmp_path: Path) -> None:
    received, exported = tmp_path / "received.edf", tmp_path / "export.edf"
    async with eeg_hub(tmp_path) as hub:
        env = cli_env(tmp_path)
        out = await ok(
            env, *signed_in(hub, "u-tech"), "record", "--exam", EXAM, "--synthetic",
            "--channels", "4", "--rate", "128", "--seconds", "20", "--speed", "0",
            "--annotate-events",
        )  # fmt: skip
        sid = stream_of(out)
        await ok(env, *signed_in(hub, "u-int1"), "view", "--stream", sid, "--out", str(received))
    status, out, err = await run(
        medhub_env(tmp_path / "var"), MEDHUB, "eeg", "export", sid, str(exported)
    )
    assert status == 0, f"exit {status}\n{out}\n{err}"
    mine, hubs = read_edf(received), read_edf(exported)
    assert mine.samples.shape == (20 * 128, 4)
    assert np.array_equal(mine.samples, hubs.samples)
    assert mine.annotations  # the eyes closed within the first 15 s
    assert mine.annotations == hubs.annotations  # "eyes_closed: eyes closed", at the same time
    assert all(a.text.startswith(("eyes_closed: ", "eyes_open: ")) for a in mine.annotations)
