"""Short-lived single-use tokens kept in the broker: login and enrolment challenges,
WebSocket tickets.

A token is 256 random bits (:func:`server.accounts.sessions.new_token`); the
broker holds only its SHA-256 (``acc:mfa:<hex>``, ``acc:ticket:<hex>``), with
a time to live, so any node can take it and a leaked broker dump gives none.
Spending is one atomic ``pop``: of two requests presenting the same token,
one wins. Raises :class:`server.broker.base.BrokerError` when the broker fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from server.accounts.sessions import new_token, token_hash
from server.broker.base import Broker


@dataclass(frozen=True, slots=True)
class ChallengeData:
    """What a challenge stands for: a user, a purpose, and (enrolment from an
    invitation) the invitation's digest."""

    user_id: str
    purpose: str
    invitation: bytes | None = None


class Challenges:
    """Challenges (``ttl_s`` seconds) and WebSocket tickets in ``broker``."""

    def __init__(self, broker: Broker, ttl_s: float) -> None:
        self.broker = broker
        self.ttl_s = ttl_s

    async def new(self, user_id: str, purpose: str, invitation: bytes | None = None) -> str:
        """A challenge token for ``purpose`` (``login`` or ``enrol``)."""
        token = new_token()
        data: dict[str, object] = {"u": user_id, "p": purpose}
        if invitation is not None:
            data["i"] = invitation
        await self.broker.set_value(_ckey(token), msgpack.packb(data), self.ttl_s)
        return token

    async def read(self, token: str, purpose: str) -> ChallengeData | None:
        """The live challenge ``token`` if it is for ``purpose`` (not spent); else None."""
        raw = await self.broker.get_value(_ckey(token))
        data = msgpack.unpackb(raw) if raw is not None else None
        if not isinstance(data, dict) or data.get("p") != purpose:
            return None
        invitation = data.get("i")
        return ChallengeData(
            str(data["u"]), purpose, invitation if isinstance(invitation, bytes) else None
        )

    async def spend(self, token: str) -> bool:
        """Spend a challenge atomically; False if unknown, expired or already spent."""
        return await self.broker.pop_value(_ckey(token)) is not None

    async def new_ticket(self, session_id: str, ttl_s: float) -> str:
        """A single-use WebSocket ticket for ``session_id``, kept ``ttl_s`` seconds."""
        ticket = new_token()
        await self.broker.set_value(_tkey(ticket), session_id.encode(), ttl_s)
        return ticket

    async def take_ticket(self, ticket: str) -> str | None:
        """The session id of a ticket, spent atomically; None if unknown, used or expired."""
        raw = await self.broker.pop_value(_tkey(ticket))
        return None if raw is None else raw.decode()


def _ckey(token: str) -> str:
    return "acc:mfa:" + token_hash(token).hex()


def _tkey(ticket: str) -> str:
    return "acc:ticket:" + token_hash(ticket).hex()
