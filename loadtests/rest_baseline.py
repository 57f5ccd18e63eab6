"""The REST baseline: a bare Starlette app on the hub's uvicorn settings.

``python -m loadtests.rest_baseline --port N`` serves the two routes the REST
section measures, each answering a constant JSON body shaped like the hub's
(no authentication, no database, no middleware):

- ``GET /api/v1/session``: the fields of the hub's ``SessionOut``;
- ``POST /api/v1/ws-ticket``: the fields of its ``TicketOut``;
- ``GET /healthz``: 200 for readiness polling.

It runs under ``uvicorn_config`` of server/serve.py (uvloop, httptools, no
access log, no server header), the configuration the hub always runs with,
with default settings, so the difference measured is the hub's own work.
"""

from __future__ import annotations

import argparse
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

#: Shaped like the hub's answers (lengths of ids and tokens included).
SESSION_BODY = {
    "session_id": "s-0123456789abcdef0123",
    "user_id": "u-bench0000001",
    "org_id": "o-bench",
    "role": "practitioner",
    "csrf_token": "Q2hhbmdlLXRoaXMtaXMtYS1iZW5jaG1hcmstY3NyZi10b2s",
    "expires_at_us": 1_800_000_000_000_000,
    "restricted": None,
    "token": None,
    "recovery_codes": None,
}
TICKET_BODY = {"ticket": "VGhpcy1pcy1hLWJlbmNobWFyay10aWNrZXQtMzItYnl0ZXM", "ttl_s": 30.0}


async def session(request: Request) -> Response:
    return JSONResponse(SESSION_BODY, headers={"cache-control": "no-store"})


async def ws_ticket(request: Request) -> Response:
    await request.body()
    return JSONResponse(TICKET_BODY, headers={"cache-control": "no-store"})


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


def app() -> Starlette:
    """The baseline app."""
    return Starlette(
        routes=[
            Route("/api/v1/session", session, methods=["GET"]),
            Route("/api/v1/ws-ticket", ws_ticket, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from loadtests.bench_server import raise_nofile_limit
    from server.config import load_settings
    from server.serve import uvicorn_config

    parser = argparse.ArgumentParser(prog="python -m loadtests.rest_baseline", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", help="ignored; accepted so every server takes the same flags")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    config = uvicorn_config(load_settings(environ={}, overrides={}), app(), args.host, args.port)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
