"""The errors of the medhub SDK and of ``medhub-chat``: the one family callers catch.

Exception hierarchy::

    MedhubError                  base; ``.retryable``: may the same call succeed later?
     ├── TransportError          the network failed: connection refused or reset, DNS, TLS,
     │    │                      the socket dropped, the ticket endpoint answered 5xx, a
     │    │                      proxy's garbage. retryable. The library's exception
     │    │                      (httpx, websockets, OSError) is ``__cause__``. Also a
     │    │                      ``ConnectionError`` (so an ``OSError``).
     │    ├── RequestTimeoutError  no reply within the request timeout (also a TimeoutError)
     │    └── UnconfirmedError   ``send_message`` gave up: the message may or may not be
     │                           committed; send it again with ``.client_msg_id``
     ├── SessionEndedError       permanent: the session was revoked or expired, the account
     │                           disabled, or its password must be changed. ``.code``.
     │                           Sign in again; retrying with the same token never helps.
     ├── HubError                an ``error`` reply: ``.code`` from the catalogue
     │                           (protocol/SPEC.md), ``.retry_after_s``; retryable for
     │                           unavailable, timeout, internal, rate_limited
     ├── SignInError             the accounts API refused sign-in or enrolment:
     │                           ``.code`` (its stable code), ``.status`` (HTTP);
     │                           retryable for 5xx and 429 only
     └── ApiError                the accounts API refused another call (directory,
                                 administration, logout): ``.code``, ``.status``,
                                 ``.retry_after_s``; retryable for 5xx and 429 only

``MedhubError`` itself is raised for a call on a client after :meth:`close`.
No exception of ``websockets`` or ``httpx`` leaves the SDK.
"""

from __future__ import annotations

#: ``error`` codes after which the same request may succeed (protocol/SPEC.md section 11).
RETRYABLE_CODES = frozenset({"unavailable", "timeout", "internal", "rate_limited"})


class MedhubError(Exception):
    """Base of every error the SDK raises on purpose (see the module docstring)."""

    retryable: bool = False


class TransportError(MedhubError, ConnectionError):
    """The network failed; the cause is ``__cause__``.

    The request may or may not have reached the hub: retry it when it is
    idempotent. The client reconnects (and resumes) by itself. ``close_code`` is
    the WebSocket close code when the hub closed the socket (protocol/SPEC.md
    section 12), else None.
    """

    retryable = True
    close_code: int | None = None


class RequestTimeoutError(TransportError, TimeoutError):
    """No reply within the request timeout (the hub may still have carried it out)."""


class UnconfirmedError(TransportError):
    """``send_message`` ran out of attempts without an answer.

    The message is committed at most once: send it again with the same
    ``client_msg_id`` to get its seq (the hub answers the committed one).
    """

    def __init__(self, client_msg_id: str, attempts: int) -> None:
        super().__init__(
            f"message not confirmed after {attempts} attempts; send it again with "
            f"client_msg_id={client_msg_id!r} (it is committed at most once)"
        )
        self.client_msg_id = client_msg_id


class SessionEndedError(MedhubError):
    """The session can no longer be used; the caller must sign in again.

    ``code``: ``unauthenticated`` (the ticket endpoint refused the token: revoked,
    expired, account disabled), ``auth_failed`` (``hello`` refused, close 4003),
    ``password_expired`` (change the password first), ``no_session`` (never
    signed in).
    """

    def __init__(self, code: str) -> None:
        super().__init__(f"the session has ended ({code}): sign in again")
        self.code = code


class HubError(MedhubError):
    """An ``error`` reply; ``code`` is the stable code, ``retry_after_s`` when given."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.retry_after_s = code, message, retry_after_s
        self.retryable = code in RETRYABLE_CODES


class SignInError(MedhubError):
    """The accounts sidecar refused the sign-in (``code`` from its JSON error)."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(f"sign-in refused: {code} (HTTP {status})")
        self.code, self.status = code, status
        self.retryable = status >= 500 or status == 429


class ApiError(MedhubError):
    """The accounts API refused a call other than sign-in (``code`` from its JSON error).

    A refused session is never an ``ApiError``: 401 (and 403 ``password_expired``)
    raise :class:`SessionEndedError`. ``retry_after_s`` is the ``Retry-After``
    header when the API sent one.
    """

    def __init__(self, code: str, status: int, retry_after_s: float | None = None) -> None:
        super().__init__(f"refused: {code} (HTTP {status})")
        self.code, self.status, self.retry_after_s = code, status, retry_after_s
        self.retryable = status >= 500 or status == 429
