"""The accounts sidecar: organisations, users, roles, delegation, login, sessions.

Layers (Synapse-like, dependencies point down): :mod:`routes` (thin Starlette
handlers, msgspec bodies) -> :mod:`service` / :mod:`admin` (use cases, audit)
-> :mod:`store` / :mod:`sessions` (SQLAlchemy Core). Pieces: :mod:`passwords`
(policy + Argon2id pool), :mod:`totp`, :mod:`lockout` (broker counters),
:mod:`csrf`, :mod:`authenticator` (WebSocket hello), :mod:`revocation`
(cross-node socket closing), :mod:`openapi`, :mod:`cli`, :mod:`module` (wiring).
See docs/accounts.md.
"""
