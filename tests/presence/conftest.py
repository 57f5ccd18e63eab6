"""Presence tests use the chat tests' seeded hub (same people, care and delegations)."""

from tests.chat.conftest import hub

__all__ = ["hub"]
