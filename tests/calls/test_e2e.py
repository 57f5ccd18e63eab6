"""Real WebRTC calls (aiortc peers through the SDK, a hub process, coturn), on loopback only.

One run of :mod:`tests.calls.e2e_driver` inside a private network namespace
with only ``lo`` (``unshare --map-root-user --net``; ../shared/webrtc-testing.md)
plays every scenario with one hub; each test checks one scenario's findings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("calls-e2e")
    command = [
        "unshare", "--map-root-user", "--net", "sh", "-c", 'ip link set lo up && exec "$@"',
        "sh", sys.executable, "-m", "tests.calls.e2e_driver", str(workdir),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, timeout=240, check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": str(workdir), "HOME": str(workdir)},
    )  # fmt: skip
    lines = done.stdout.decode().strip().splitlines()
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    assert lines, done.stderr.decode()[-4000:]
    results: dict[str, Any] = json.loads(lines[-1])
    return results


def ok(e2e: dict[str, Any], name: str) -> dict[str, Any]:
    found = e2e[name]
    assert not found.get("error"), found["error"]
    return dict(found)


def test_two_peers_call_media_both_ways_data_channel_and_hang_up(e2e: dict[str, Any]) -> None:
    got = ok(e2e, "call")
    for side in ("caller", "callee"):
        assert got[side]["connected"], got[side]
        assert got[side]["video_frames"] >= 10
        assert got[side]["audio_frames"] > 0
        assert got[side]["channel_rtt_ms"] is not None
    assert got["pairs"] == [["host", "host"], ["host", "host"]]
    assert got["callee_end"] == "user_hangup"
    record = next(r for r in e2e["records"] if r["id"] == got["caller"]["call"])
    assert (record["caller"], record["callee"], record["end_reason"]) == (
        "alice", "bob", "user_hangup",
    )  # fmt: skip
    assert record["answered_us"] is not None


def test_a_dropped_socket_resumes_the_call_within_the_grace_period(e2e: dict[str, Any]) -> None:
    got = ok(e2e, "resume")
    assert got["caller_saw"] == ["accepted", "reconnecting", "resumed"]
    assert got["reconnects"] == 1
    assert got["resumed_after_s"] < 10  # calls_grace_s
    assert min(got["frames_after_resume"]) >= 10  # media kept flowing both ways
    assert got["ping_after_resume_ms"] is not None
    assert got["caller_end"] == "user_hangup"  # hung up over the new socket


def test_relay_only_through_coturn_with_credentials_minted_by_the_hub(e2e: dict[str, Any]) -> None:
    got = ok(e2e, "relay")
    for side in ("caller", "callee"):
        assert got[side]["connected"]
        assert got[side]["video_frames"] >= 10
    assert got["pairs"] == [["relay", "relay"], ["relay", "relay"]]


def test_coturn_refuses_credentials_under_another_secret(e2e: dict[str, Any]) -> None:
    got = ok(e2e, "wrong_secret")
    assert got["minted_username"].endswith(":alice")
    assert got["outcome"] == "ice_failed"  # nothing gathered: nobody was rung
    assert got["refused_in_log"]


def test_support_test_call_with_the_echo_service(e2e: dict[str, Any]) -> None:
    got = ok(e2e, "echo")
    assert got["exit"] == 0, got
    assert got["connected"]
    assert got["video_frames"] >= 10
    assert got["echo_rtt_ms"] is not None  # my own stamped frames came back
    assert got["channel_rtt_ms"] is not None
    assert got["end_reason"] == "user_hangup"
    assert got["remote_stats"]["tracks"] == 2  # the echo sent back audio and video
    record = next(r for r in e2e["records"] if r["id"] == got["call"])
    assert (record["kind"], record["caller"], record["callee"]) == ("echo", "pat", "echo")
