"""The HTTP shell of the accounts API: endpoint table, request context, errors.

:class:`Endpoint` is plain data (method, path, body and reply types, auth
mode, handler); :func:`build_routes` turns the table into Starlette routes and
:mod:`server.accounts.openapi` into the OpenAPI document, so the two cannot
disagree. Each request:

1. reads the body, at most :data:`MAX_BODY_BYTES` (a larger declared
   ``Content-Length`` is refused before reading; a longer stream as soon as
   the count passes the limit: ``payload_too_large``), as JSON into the
   endpoint's Struct (unknown fields, wrong types, bounds: ``bad_request``;
   not JSON: ``unsupported_media_type``);
2. authenticates (``public``: Origin / Sec-Fetch-Site checked when present;
   ``session``: bearer token, or the cookie plus CSRF token and Origin for
   state-changing methods; a ``password_expired`` session only reaches
   endpoints marked ``restricted_ok``);
3. calls the handler and encodes its reply.

The endpoint's path template (``/api/v1/users/{user_id}``) is left in the
ASGI scope (:data:`server.logs.ROUTE_KEY`) for the request log line, which
never carries the concrete path.

Every error is ``{"error": {"code", "message"}}`` with the code's status;
an unexpected exception is logged (type only) and answered ``internal``.
Overload is never ``internal``: a full password-hashing queue answers 429
``rate_limited`` and an exhausted database pool 503 ``unavailable``, both
with ``Retry-After``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from server.accounts import csrf
from server.accounts.errors import ApiError
from server.accounts.passwords import HasherBusyError
from server.accounts.schemas import ErrorBody, ErrorDetail
from server.accounts.service import AccountService, Caller
from server.broker.base import BrokerError
from server.logs import ROUTE_KEY

log = logging.getLogger(__name__)

Auth = Literal["public", "session", "restricted_ok"]
PATH_PARAM = re.compile(r"^[a-z]-[0-9a-f]{1,38}$")
MAX_BODY_BYTES = 65536  # larger request bodies: 413 payload_too_large, never buffered
#: Seconds a client is told to wait when the database pool had no connection to give.
POOL_RETRY_AFTER_S = 2
#: Every API answer: never cached by a browser or a proxy.
NO_STORE = {"cache-control": "no-store"}


@dataclass
class Context:
    """What a handler gets: the request, its typed body, the caller, the source address."""

    request: Request
    body: Any
    caller: Caller | None
    source: str | None
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def me(self) -> Caller:
        """The authenticated caller (only for ``session`` endpoints)."""
        assert self.caller is not None
        return self.caller

    def param(self, name: str) -> str:
        """A path parameter (already checked against the id pattern)."""
        return str(self.request.path_params[name])

    def query(self, name: str) -> str | None:
        """A declared query parameter (checked against the id pattern), or None."""
        value = self.request.query_params.get(name)
        return None if value is None else str(value)


Handler = Callable[[Context], Awaitable[msgspec.Struct]]


@dataclass(frozen=True)
class Endpoint:
    """One operation of the API (plain data, shared with the OpenAPI builder)."""

    method: str
    path: str
    handler: Handler
    summary: str
    reply: type[msgspec.Struct]
    body: type[msgspec.Struct] | None = None
    auth: Auth = "session"
    status: int = 200
    errors: tuple[str, ...] = ()
    #: Optional query parameters, each an id (``^[a-z]-[0-9a-f]{1,38}$``); others are ignored.
    query: tuple[str, ...] = ()

    @property
    def operation_id(self) -> str:
        """A stable id for OpenAPI (the handler's name)."""
        return self.handler.__name__.lstrip("_")


@dataclass(frozen=True)
class RestPart:
    """What one component adds to ``/api/v1`` (built by :meth:`Accounts.app`).

    ``endpoints``: JSON operations (the table: routed by :func:`build_routes`,
    documented from their types). ``routes``: raw Starlette routes, for bodies
    that are streamed (uploads, downloads, exports); each must authenticate with
    :meth:`Shell.caller` and answer errors with :func:`error_response`.
    ``operations``: the OpenAPI path items of those raw routes, by full path
    (``/api/v1/...``).
    """

    endpoints: Sequence[Endpoint] = ()
    routes: Sequence[BaseRoute] = ()
    operations: Mapping[str, dict[str, Any]] = field(default_factory=dict)


async def _raw_handler(ctx: Context) -> msgspec.Struct:
    raise ApiError("internal")  # a raw route is served by its own function, never this


def raw_endpoint(method: str, path: str, auth: Auth = "session") -> Endpoint:
    """An :class:`Endpoint` describing a raw route, for :meth:`Shell.caller`."""
    return Endpoint(method, path, _raw_handler, "raw", ErrorBody, auth=auth)


def check_id(value: str) -> str:
    """``value`` when it is an id as the API's paths take them; raises ``not_found``
    (as the API answers a malformed id) otherwise. For the ``medhub admin`` CLI."""
    if not PATH_PARAM.fullmatch(value):
        raise ApiError("not_found")
    return value


def error_response(exc: ApiError) -> Response:
    """The JSON answer of an :class:`ApiError` (with ``Retry-After`` when it has one)."""
    body = msgspec.json.encode(ErrorBody(ErrorDetail(exc.code, exc.message)))
    headers = None if exc.retry_after_s is None else {"retry-after": str(exc.retry_after_s)}
    return Response(body, status_code=exc.status, media_type="application/json", headers=headers)


async def read_bounded(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes; raises ``payload_too_large`` past it.

    A declared ``Content-Length`` over the limit is refused before reading
    anything; otherwise the stream is read chunk by chunk and refused as soon
    as the count passes the limit (chunked bodies, or a lying header), so an
    unauthenticated client cannot make the server buffer an unbounded body.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise ApiError("bad_request", "invalid Content-Length")
        if int(declared) > limit:
            raise ApiError("payload_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("payload_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Shell:
    """Request handling shared by every endpoint."""

    service: AccountService
    csrf_key: bytes
    allowed_origins: Collection[str]
    client_address: Callable[[Request], str | None]

    async def _read(self, request: Request, body_type: type[msgspec.Struct] | None) -> Any:
        headers = request.headers
        bodiless = "content-length" not in headers and "transfer-encoding" not in headers
        if body_type is None and bodiless:
            return None  # no body sent (a plain GET): nothing to read
        raw = await read_bounded(request, MAX_BODY_BYTES)
        if body_type is None:
            return None
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if ctype != "application/json":
            raise ApiError("unsupported_media_type")
        try:
            return msgspec.json.decode(raw or b"{}", type=body_type)
        except msgspec.ValidationError as exc:
            raise ApiError("bad_request", str(exc)) from None
        except msgspec.DecodeError:
            raise ApiError("bad_request", "the body is not valid JSON") from None

    async def caller(self, request: Request, ep: Endpoint) -> Caller | None:
        """The caller of ``request`` as ``ep.auth`` requires (None for ``public``).

        Raw routes call it with an :class:`Endpoint` describing themselves.
        Raises :class:`ApiError`: ``unauthenticated``, ``origin_refused``,
        ``csrf_failed`` (cookie sessions on unsafe methods), ``password_expired``.
        """
        headers = request.headers
        if ep.auth == "public":
            if not csrf.origin_ok(headers, self.allowed_origins, require=False):
                raise ApiError("origin_refused")
            return None
        authz = headers.get("authorization", "")
        if authz[:7].lower() == "bearer ":
            caller = await self.service.authenticate(authz[7:].strip())
        else:
            token = request.cookies.get(csrf.COOKIE_NAME)
            if not token:
                raise ApiError("unauthenticated")
            caller = await self.service.authenticate(token)
            if request.method not in csrf.SAFE_METHODS:
                if not csrf.origin_ok(headers, self.allowed_origins, require=True):
                    raise ApiError("origin_refused")
                if not csrf.csrf_ok(self.csrf_key, token, headers.get(csrf.CSRF_HEADER)):
                    raise ApiError("csrf_failed")
        if caller.session.restricted and ep.auth != "restricted_ok":
            raise ApiError("password_expired")
        return caller

    def wrap(self, ep: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        """The Starlette endpoint function for ``ep``."""

        async def endpoint(request: Request) -> Response:
            request.scope[ROUTE_KEY] = request.scope.get("root_path", "") + ep.path
            try:
                for value in request.path_params.values():
                    if not PATH_PARAM.fullmatch(str(value)):
                        raise ApiError("not_found")
                for name in ep.query:
                    value = request.query_params.get(name)
                    if value is not None and not PATH_PARAM.fullmatch(value):
                        raise ApiError("not_found")
                body = await self._read(request, ep.body)
                caller = await self.caller(request, ep)
                ctx = Context(request, body, caller, self.client_address(request))
                reply = await ep.handler(ctx)
            except ApiError as exc:
                return error_response(exc)
            except HasherBusyError as exc:
                return error_response(ApiError("rate_limited", retry_after_s=exc.retry_after_s))
            except PoolTimeoutError:  # every pooled connection busy for pool_timeout: overload
                log.warning("database pool exhausted", extra={"path": ep.path})
                return error_response(ApiError("unavailable", retry_after_s=POOL_RETRY_AFTER_S))
            except BrokerError:
                log.warning("broker unavailable", extra={"path": ep.path})
                return error_response(ApiError("unavailable"))
            except Exception as exc:
                log.error(
                    "accounts endpoint failed", extra={"path": ep.path, "error": type(exc).__name__}
                )
                return error_response(ApiError("internal"))
            response = Response(
                msgspec.json.encode(reply),
                status_code=ep.status,
                headers=NO_STORE,
                media_type="application/json",
            )
            for name, value in ctx.headers:
                response.headers.append(name, value)
            return response

        endpoint.__name__ = ep.operation_id
        return endpoint


def build_routes(shell: Shell, endpoints: list[Endpoint]) -> list[Route]:
    """Starlette routes for the endpoint table (one Route per path, methods merged)."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for ep in endpoints:
        by_path.setdefault(ep.path, {})[ep.method] = ep
    routes = []
    # static paths first: /me/sessions/revoke-others before /me/sessions/{session_id}
    for path, methods in sorted(by_path.items(), key=lambda item: "{" in item[0]):
        wrapped = {m: shell.wrap(ep) for m, ep in methods.items()}

        async def dispatch(request: Request, _w: dict[str, Any] = wrapped) -> Response:
            handler = _w.get(request.method) or (
                _w.get("GET") if request.method == "HEAD" else None
            )
            if handler is None:
                return error_response(ApiError("method_not_allowed"))
            response: Response = await handler(request)
            return response

        routes.append(
            Route(
                path, dispatch, methods=[*methods, "HEAD", "PUT", "PATCH", "DELETE", "POST", "GET"]
            )
        )
    return routes
