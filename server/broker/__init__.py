"""The broker: cross-node pub/sub, presence, ephemeral values and counters.

:func:`create_broker` picks the implementation from the settings; capabilities
only ever see the :class:`Broker` interface.
"""

from __future__ import annotations

from typing import Protocol

from server.broker.base import Broker, BrokerError, MessageHandler, Subscription
from server.broker.memory import MemoryBackend, MemoryBroker

__all__ = [
    "Broker",
    "BrokerError",
    "BrokerSettings",
    "MemoryBackend",
    "MemoryBroker",
    "MessageHandler",
    "Subscription",
    "create_broker",
]


class BrokerSettings(Protocol):
    """The part of :class:`server.config.Settings` the broker factory reads."""

    @property
    def broker(self) -> str: ...

    @property
    def redis_url(self) -> str: ...


def create_broker(settings: BrokerSettings) -> Broker:
    """Build (not start) the broker named by ``settings.broker``.

    ``"memory"`` gives a :class:`MemoryBroker` (one process); ``"redis"`` gives
    a ``RedisBroker`` on ``settings.redis_url`` (redis-py is imported only then).
    Raises :class:`BrokerError` for any other name.
    """
    if settings.broker == "memory":
        return MemoryBroker()
    if settings.broker == "redis":
        from server.broker.redis import RedisBroker

        return RedisBroker(settings.redis_url)
    raise BrokerError(f"unknown broker {settings.broker!r} (expected memory or redis)")
