"""The accounts sidecar: organisations, users, roles, delegation, login, sessions.

Layers (Synapse-like, dependencies point down): :mod:`routes` (thin Starlette
handlers, msgspec bodies) -> :mod:`service` / :mod:`enrolment` / :mod:`admin` /
:mod:`recovery` / :mod:`directory` / :mod:`profile` (use cases, audit) ->
:mod:`store` / :mod:`sessions` / :mod:`relations` (SQLAlchemy Core). Pieces:
:mod:`passwords` (policy + Argon2id pool), :mod:`totp`, :mod:`mfa` (secrets at
rest, enrolment data), :mod:`challenges` (broker tokens), :mod:`lockout`
(broker counters), :mod:`csrf`, :mod:`authenticator` (WebSocket hello),
:mod:`revocation` (cross-node socket closing), :mod:`openapi`, :mod:`cli`
(``medhub admin``), :mod:`demo` (``medhub demo seed``), :mod:`module` (wiring).
See docs/accounts.md.
"""
