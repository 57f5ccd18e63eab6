"""The audit trail (HDS): typed events, an HMAC chain, a batched writer, a CLI.

Modules: :mod:`events` (what callers build), :mod:`trail` (what callers call),
:mod:`chain` (pure encoding, tagging and verification), :mod:`store` (SQL),
:mod:`checkpoints` (external checkpoint sinks), :mod:`ops` (verify, purge,
export, stats), :mod:`source` (trusted client address), :mod:`cli`.
"""
