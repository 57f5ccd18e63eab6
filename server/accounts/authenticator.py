"""The WebSocket ``Authenticator`` backed by accounts sessions.

``hello.auth`` methods:

- ``ticket``: a single-use ticket from ``POST /api/v1/ws-ticket``, popped
  atomically from the broker (so it works once, on any node, within
  ``ws_ticket_ttl_s``);
- ``token``: a bearer session token (API clients);
- ``cookie``: the ``__Host-medhub-session`` cookie of the upgrade request,
  accepted only when the upgrade's ``Origin`` is in ``allowed_origins``.

The session must be valid (not revoked, idle or past its end) and not
restricted (``password_expired``), and its user usable (active, enrolled, a
guest account not past its end): the same check for every method
(:meth:`AccountService.authenticate` / :meth:`AccountService.session_caller`). The principal's
``expires_at`` is the session's absolute end (or the guest account's end,
when sooner), in wall-clock seconds: the hub closes the socket then, and
:class:`AccountsSessionKeeper` lets the hub keep sessions alive from socket
activity and close the sockets of idle ones (:mod:`server.session_watch`).
Every refusal is
:class:`server.auth.AuthError` with ``auth_failed`` (the same answer for every
cause); an expired ticket or session also answers ``auth_failed``, so a
client cannot probe which tickets existed.
"""

from __future__ import annotations

from collections.abc import Collection

from protocol.errors import ErrorCode
from protocol.messages import Auth
from server.accounts.csrf import COOKIE_NAME
from server.accounts.errors import ApiError
from server.accounts.service import AccountService
from server.auth import AuthError, HandshakeInfo, Principal


class AccountsAuthenticator:
    """Turns ``hello`` credentials into a :class:`Principal` (see the module docstring)."""

    def __init__(self, service: AccountService, allowed_origins: Collection[str]) -> None:
        self._service = service
        self._origins = frozenset(allowed_origins)

    async def authenticate(self, auth: Auth, info: HandshakeInfo) -> Principal:
        """The principal of valid credentials; raises :class:`AuthError` otherwise."""
        token: str | None
        if auth.method == "ticket":
            if not auth.token:
                raise AuthError(ErrorCode.AUTH_FAILED, "no ticket")
            session_id = await self._service.take_ticket(auth.token)
            if session_id is None:
                raise AuthError(ErrorCode.AUTH_FAILED, "unknown or used ticket")
            try:
                caller = await self._service.session_caller(session_id)
            except ApiError:
                raise AuthError(ErrorCode.AUTH_FAILED, "invalid session") from None
        else:
            if auth.method == "cookie":
                if info.origin is None or info.origin not in self._origins:
                    raise AuthError(ErrorCode.AUTH_FAILED, "cookie without an allowed origin")
                token = info.cookies.get(COOKIE_NAME)
            else:
                token = auth.token
            if not token:
                raise AuthError(ErrorCode.AUTH_FAILED, "no token")
            try:
                caller = await self._service.authenticate(token)
            except ApiError:
                raise AuthError(ErrorCode.AUTH_FAILED, "invalid session") from None
        if caller.session.restricted:
            raise AuthError(ErrorCode.AUTH_FAILED, "session restricted")
        u = caller.user
        ends = [caller.session.expires_us] + ([u.expires_us] if u.expires_us else [])
        return Principal(
            user_id=u.id,
            org_id=u.org_id,
            role=u.role,
            session_id=caller.session.id,
            expires_at=min(ends) / 1e6,
        )


class AccountsSessionKeeper:
    """:class:`server.session_watch.SessionKeeper` over the sessions table."""

    def __init__(self, service: AccountService) -> None:
        self._service = service

    async def keep_alive(self, active: Collection[str], watched: Collection[str]) -> set[str]:
        """Refresh ``active`` sessions' last use (socket activity); the ended ids of ``watched``."""
        svc = self._service
        return await svc.sessions.keep_alive(active, watched, svc.now_us())
