"""Structured JSON logs with the connection or request id of the current task.

Log records never carry tokens, passwords, TOTP codes or message bodies: code
passes ids and codes in ``extra``, and :class:`JsonFormatter` drops any extra
key in :data:`FORBIDDEN_KEYS` as a second line of defence.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import Any

#: The id of the connection or HTTP request being served by the current task.
context_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("medhub_ctx", default=None)

FORBIDDEN_KEYS = frozenset(
    {"token", "password", "code", "totp", "secret", "body", "text", "cookie", "authorization"}
)
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, ctx, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "t": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = context_id.get()
        if ctx is not None:
            out["ctx"] = ctx
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            out[key] = "<redacted>" if key.lower() in FORBIDDEN_KEYS else value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "info", json_lines: bool = True) -> None:
    """Route the root logger (and uvicorn's) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn logs every WebSocket and request with the client's address and path
    # at info level: personal data in a health product's logs. Our own lines
    # carry ids instead; keep uvicorn's to warnings and errors.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True
