"""Structured JSON logs with the connection or request id of the current task.

Log records never carry tokens, passwords, TOTP codes or message bodies: code
passes ids and codes in ``extra``, and :class:`JsonFormatter` drops any extra
key in :data:`FORBIDDEN_KEYS` as a second line of defence.

What a hub process logs at ``info``, besides its start and stop (``listening``,
``hub ready``, ``stopped``): one ``request`` line per HTTP request
(:class:`RequestLog`), one ``login`` line per login outcome
(:func:`server.accounts.service.log_login`), socket closes and supervised
failures. No email, name, address, query string or body.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    """One JSON object per line: time, level, logger, message, ctx, extras.

    A value JSON cannot hold is written as its ``str()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._encode = msgspec.json.Encoder(enc_hook=str).encode
        self._second = -1
        self._stamp = ""

    def _time(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once per second, not once per line
            self._second, self._stamp = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)),
            )
        return f"{self._stamp}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "t": self._time(record.created, record.msecs),
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
        return self._encode(out).decode()


def configure_logging(level: str = "info", json_lines: bool = True) -> None:
    """Route the root logger (and uvicorn's) to stderr in the chosen format.

    Also turns off what no line of ours writes and every record would pay for
    (the logging HOWTO's "Optimization"): the caller's file and line (a stack
    walk per record), thread, process and multiprocessing names.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
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


#: ASGI scope key where a route leaves its path template (``/api/v1/users/{user_id}``).
ROUTE_KEY = "medhub.route"
#: The route logged for a request no route matched (its path is never logged).
UNMATCHED = "<unmatched>"

request_log = logging.getLogger("medhub.http")
#: Request ids need to be unique, not secret: a per-process generator seeded from
#: the system's randomness, without a system call per request.
_request_bits = random.Random(os.urandom(32)).getrandbits


class RequestLog:
    """ASGI middleware: one log line per HTTP request, and an ``x-request-id`` header.

    The line (``msg`` ``request``) carries ``method``, ``route`` (the path
    template, never the concrete path: no ids typed by a client, no query
    string), ``status``, ``duration_ms`` and ``request_id`` (``r-`` + 64
    random bits, also the ``ctx`` of every line logged while serving it and
    the ``request_id`` of its audit entries). Never a header, a body or an
    address. WebSocket scopes pass through untouched (the hub logs sockets).

    ``routes`` are the app's top-level routes: a static route is logged as its
    path, a path under a mount as ``<mount>/{path}`` unless the mounted app
    left its template at :data:`ROUTE_KEY` (the accounts API does), anything
    else as :data:`UNMATCHED`.
    """

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self._static = frozenset(
            r.path for r in routes if isinstance(r, Route) and "{" not in r.path
        )
        mounts = [m.path.rstrip("/") for m in routes if isinstance(m, Mount)]
        self._mounts = sorted(mounts, key=len, reverse=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"r-{_request_bits(64):016x}"
        token = context_id.set(request_id)
        status = 500  # unless a response starts
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "route": self.route_of(scope),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                    "request_id": request_id,
                },
            )
            context_id.reset(token)

    def route_of(self, scope: Scope) -> str:
        """The path template of a served request (see the class docstring)."""
        route = scope.get(ROUTE_KEY)
        if isinstance(route, str):
            return route
        path = str(scope.get("path", ""))
        if path in self._static:
            return path
        for mount in self._mounts:
            if path == mount or path.startswith(mount + "/"):
                return mount + "/{path}"
        return UNMATCHED
