"""Log lines are JSON, carry the connection id, and never a secret-looking field."""

from __future__ import annotations

import json
import logging

from server.logs import JsonFormatter, context_id


def _format(extra: dict[str, object]) -> dict[str, object]:
    record = logging.LogRecord("medhub.test", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    out = json.loads(JsonFormatter().format(record))
    assert isinstance(out, dict)
    return out


def test_json_line_has_context_and_extras() -> None:
    token = context_id.set("conn-42")
    try:
        line = _format({"conn": "conn-42", "close": 4009})
    finally:
        context_id.reset(token)
    assert line["msg"] == "hello x"
    assert line["ctx"] == "conn-42"
    assert line["close"] == 4009
    assert line["level"] == "info"


def test_secret_fields_are_redacted() -> None:
    line = _format(
        {"token": "s3cr3t-token", "password": "hunter2hunter2", "code": "123456", "body": "hi"}
    )
    for key in ("token", "password", "code", "body"):
        assert line[key] == "<redacted>"
    assert "s3cr3t" not in json.dumps(line)
