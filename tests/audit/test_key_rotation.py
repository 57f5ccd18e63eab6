"""Audit key rotation: entries tagged under a retired key still verify (``medhub audit verify``)."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import pytest

from server.cli import main
from tests.audit.test_cli import write_entries

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(100, 132))).decode()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("MEDHUB_CONFIG", "MEDHUB_DATABASE_URL", "MEDHUB_SECRET_AUDIT_RETIRED_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDHUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MEDHUB_NODE_ID", "rotation-test")
    return tmp_path


def use_key(monkeypatch: pytest.MonkeyPatch, key_id: str, key: str, retired: str = "") -> None:
    """Set the audit settings of the next "restart" (each CLI call loads them afresh)."""
    monkeypatch.setenv("MEDHUB_AUDIT_KEY_ID", key_id)
    monkeypatch.setenv("MEDHUB_SECRET_AUDIT_KEY", key)
    monkeypatch.setenv("MEDHUB_SECRET_AUDIT_RETIRED_KEYS", retired)


def key_ids(data_dir: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(data_dir / "medhub.db") as conn:
        return list(conn.execute("SELECT seq, key_id FROM audit_log ORDER BY seq"))


def test_rotated_chain_verifies_with_the_retired_key(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_key(monkeypatch, "k1", KEY_A)
    assert main(["migrate"]) == 0
    write_entries(5)
    # Restart with B current (k2) and A retired: new entries under k2, the chain continues.
    use_key(monkeypatch, "k2", KEY_B, retired=f"k1:{KEY_A}")
    write_entries(4)
    assert key_ids(data_dir) == [(i, "k1") for i in range(1, 6)] + [(i, "k2") for i in range(6, 10)]
    capsys.readouterr()
    assert main(["audit", "verify"]) == 0
    assert "intact: 9 entries (seq 1..9)" in capsys.readouterr().out

    # Without A retired, the first k1 entry names an unknown key.
    use_key(monkeypatch, "k2", KEY_B)
    assert main(["audit", "verify"]) == 1
    assert "BROKEN at seq 1: unknown_key" in capsys.readouterr().out

    # A wrong key under the retired id does not pass either.
    use_key(monkeypatch, "k2", KEY_B, retired=f"k1:{KEY_B}")
    assert main(["audit", "verify"]) == 1
    assert "BROKEN at seq 1" in capsys.readouterr().out


def test_retired_id_equal_to_the_current_one_is_refused(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_key(monkeypatch, "k2", KEY_B, retired=f"k2:{KEY_A}")
    assert main(["audit", "verify"]) == 2
    captured = capsys.readouterr()
    assert KEY_A not in captured.out + captured.err
