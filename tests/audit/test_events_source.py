"""Typed events (pseudonymous ids only) and the trusted client address helper."""

from __future__ import annotations

import pytest

from server.audit.events import Action, AuditEvent, Result
from server.audit.source import client_address


def test_stable_values() -> None:
    assert Action.LOGIN_FAILED.value == "login_failed"
    assert Action.WS_CONNECT == "ws_connect"
    assert [r.value for r in Result] == ["ok", "denied", "failed"]
    assert len({a.value for a in Action}) == len(Action)


def test_plain_strings_are_converted() -> None:
    ev = AuditEvent(action="read", result="ok", actor="u-1")  # type: ignore[arg-type]
    assert ev.action is Action.READ
    assert ev.result is Result.OK


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("actor", "alice@example.org"),  # an email
        ("actor", "Alice Martin"),  # a name
        ("acting_for", "dr house"),
        ("org", ""),
        ("target_id", "x" * 129),
        ("request_id", "a/b"),
        ("role", "Doctor"),
        ("target_type", "medical record"),
        ("reason", "Bad password!"),
        ("source", "example.org"),
    ],
)
def test_non_pseudonymous_values_are_rejected(field: str, value: str) -> None:
    kwargs = {"action": Action.READ, field: value}
    with pytest.raises(ValueError, match=field):
        AuditEvent(**kwargs)  # type: ignore[arg-type]


def test_failure_needs_a_reason() -> None:
    with pytest.raises(ValueError, match="reason"):
        AuditEvent(action=Action.LOGIN_FAILED, result=Result.FAILED)
    ev = AuditEvent(action=Action.LOGIN_FAILED, result=Result.FAILED, reason="bad_password")
    assert ev.reason == "bad_password"
    with pytest.raises(ValueError, match="not a valid Action"):
        AuditEvent(action="teleport")  # type: ignore[arg-type]


PROXIES = ["10.0.0.0/8", "192.168.1.1", "fd00::/8"]


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        (None, "1.2.3.4", None),  # unknown peer (unix socket): nothing is believed
        ("garbage", None, None),
        ("203.0.113.5", None, "203.0.113.5"),
        ("203.0.113.5:5555", None, "203.0.113.5"),  # the port is dropped
        ("203.0.113.5", "1.2.3.4", "203.0.113.5"),  # untrusted peer: header ignored
        ("10.1.2.3", "1.2.3.4", "1.2.3.4"),  # trusted proxy: its client
        ("10.1.2.3", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # a spoofed left entry is ignored
        ("10.1.2.3", "6.6.6.6, 1.2.3.4, 192.168.1.1", "1.2.3.4"),  # chain of proxies
        ("10.1.2.3", "10.9.9.9, 192.168.1.1", "10.9.9.9"),  # all trusted: the leftmost
        ("10.1.2.3", "junk, 1.2.3.4", "1.2.3.4"),
        ("10.1.2.3", "1.2.3.4, junk", "10.1.2.3"),  # malformed hop: the proxy itself
        ("10.1.2.3", "", "10.1.2.3"),
        ("::ffff:203.0.113.5", None, "203.0.113.5"),  # IPv4-mapped
        ("[fd00::1]:443", "[2001:db8::1]:1234", "2001:db8::1"),
        ("fd00::1", "2001:DB8:0::1", "2001:db8::1"),  # canonical form
    ],
)
def test_client_address(peer: str | None, xff: str | None, expected: str | None) -> None:
    assert client_address(peer, xff, PROXIES) == expected


def test_client_address_result_is_a_valid_event_source() -> None:
    source = client_address("10.0.0.1", "2001:db8::1", PROXIES)
    assert AuditEvent(action=Action.LOGIN, source=source).source == "2001:db8::1"


def test_bad_proxy_config_raises() -> None:
    with pytest.raises(ValueError, match="does not appear"):
        client_address("10.0.0.1", "1.2.3.4", ["not-a-network"])
