"""schemathesis over the OpenAPI document, against the ASGI app in-process.

Every operation is called with generated valid and invalid inputs, anonymous
and as an enrolled admin: no 5xx, every status and body as documented.
Bounded: a few examples per operation (well under 60 s in all).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

from server.accounts import totp
from server.accounts.errors import ApiError
from server.accounts.web import error_response
from tests.accountstest import PASSWORD, accounts_env, secret_of

STATE: dict[str, Any] = {}


async def _proxy(scope: Any, receive: Any, send: Any) -> None:
    await STATE["app"](scope, receive, send)


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    async with accounts_env(Path(tempfile.mkdtemp(prefix="medhub-st-"))) as env:
        STATE["app"] = env.accounts.app()
        org = await env.accounts.admin.create_org(None, "Clinique A")
        inv = await env.accounts.admin.invite(
            None, org.id, role="admin", name="Ann", email="a@a.example"
        )
        svc = env.accounts.enrolments
        challenge, enrol = await svc.accept_invitation(inv.token, PASSWORD, None)
        code = totp.code_at(secret_of(enrol.otpauth_uri), totp.step_at(env.clock()))
        STATE["token"] = (await svc.confirm_enrolment(challenge, code, None)).token
        yield


async def _not_found(request: Request, exc: Exception) -> Response:
    # Starlette's Mount does not match a path holding a newline; the outer app answers.
    return error_response(ApiError("not_found"))


APP = Starlette(
    routes=[Mount("/api/v1", app=_proxy)],
    lifespan=_lifespan,
    exception_handlers={HTTPException: _not_found},
)
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)
    case.call_and_validate(checks=CHECKS, headers={"authorization": f"Bearer {STATE['token']}"})
