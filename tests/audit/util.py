"""Helpers shared by the audit tests."""

from __future__ import annotations

from server.audit.chain import BreakKind, VerifyResult


def broken_at(result: VerifyResult) -> tuple[int, BreakKind] | None:
    """``(first broken seq, kind)`` or ``None`` when the chain is intact."""
    brk = result.first_break
    return None if brk is None else (brk.seq, brk.kind)
