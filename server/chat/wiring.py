"""Builds the real-time capabilities (chat, presence) for the composition root.

``server/app.py`` calls :func:`build_realtime` once and starts / closes the
result in its lifespan; nothing here is a singleton.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.broker.base import Broker
from server.chat.facts import AccountsFacts
from server.chat.service import ChatService
from server.config import Settings
from server.hub import AuditRecorder, Hub
from server.presence.service import PresenceService
from server.router import Router
from server.security.at_rest import AT_REST_KEY_ID, settings_keyring
from server.store.db import Database

__all__ = ["AT_REST_KEY_ID", "Realtime", "build_realtime"]


@dataclass
class Realtime:
    """Chat and presence of one process."""

    chat: ChatService
    presence: PresenceService

    def attach(self, hub: Hub) -> None:
        """Have ``hub`` tell presence and chat about sockets opening and closing."""
        hub.add_listener(self.presence)
        hub.add_listener(self.chat)

    async def start(self) -> None:
        """Start the chat writer and the presence tasks."""
        await self.chat.start()
        await self.presence.start()

    async def close(self) -> None:
        """Stop presence (its devices go offline) and flush the chat writer."""
        await self.presence.close()
        await self.chat.close()


def build_realtime(
    settings: Settings, database: Database, broker: Broker, audit: AuditRecorder, router: Router
) -> Realtime:
    """Build chat and presence and register their routes; then call ``attach(hub)``.

    Raises ``CryptoError`` when ``secret_at_rest_key`` is not a base64 32-byte key.
    """
    keys = settings_keyring(settings)  # current + retired at-rest keys
    facts = AccountsFacts(database)
    chat = ChatService(database, broker, keys, facts, audit)
    presence = PresenceService(broker, facts, audit, settings.effective_node_id)
    chat.register(router)
    presence.register(router)
    return Realtime(chat, presence)
