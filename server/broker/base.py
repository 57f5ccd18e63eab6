"""The broker interface: what capabilities share across hub processes.

Capabilities (presence, chat, calls, eeg) and security counters talk to other
nodes only through this interface; they never know whether it is the in-memory
implementation (one process) or Redis (several). Both pass the same conformance
suite in ``tests/broker/``.

Four services:

- **pub/sub** by topic: ``publish(topic, payload)`` delivers ``payload`` to every
  subscription of ``topic`` on every node, in publish order per publisher and
  topic. Delivery is at-most-once; durable traffic (chat) is persisted by its
  store first and the event only tells nodes to look.
- **presence registry**: per-key sets of members with an expiry, refreshed by
  their node. Readers never see expired members, so a dead node's users age out.
- **ephemeral values**: small bytes values with an optional TTL, and an atomic
  set-if-absent (used for single-use tickets and TOTP replay protection).
- **atomic counters** with an optional TTL on creation (rate and lockout
  counters that hold across nodes).

Topic and key names are plain ASCII strings of at most 256 characters; payloads
and values are bytes (msgpack, never pickle) of at most 1 MiB. Topics, presence
keys and value/counter keys are three separate namespaces.

Batched calls (``publish_many``, ``subscribe_many``, ``unsubscribe_many``,
``presence_set_many``, ``presence_remove_many``, ``presence_get_many``,
``get_values``, ``set_values``) do the same as their single forms for many items in one
round trip where the backend allows it (Redis: one pipeline; the defaults
here loop). A failed batch raises :class:`BrokerError` with an unknown
outcome for each item (some may have been applied); each item on its own
keeps the guarantees of its single form.

Errors: every failure is a :class:`BrokerError` (invalid name, payload or TTL;
use before :meth:`Broker.start` or after :meth:`Broker.close`; backend
unreachable or timed out). Nothing is retried behind the caller's back, so a
``BrokerError`` from a write means "unknown outcome" for non-idempotent calls
(``incr``, ``set_if_absent``, ``pop_value``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_NAME_LENGTH = 256
MAX_PAYLOAD_BYTES = 1024 * 1024

#: Called on the event loop for each message: (topic, payload). Must not block
#: (schedule a task for async work); a handler that raises is logged and counted
#: (``handler_errors``), and the subscription continues. Handlers may publish,
#: subscribe or unsubscribe (via a task) without disturbing delivery.
MessageHandler = Callable[[str, bytes], None]


class BrokerError(Exception):
    """The broker could not do what was asked (connection lost, invalid name)."""


@dataclass(eq=False)
class Subscription:
    """A handle returned by :meth:`Broker.subscribe`; pass it to ``unsubscribe``."""

    topic: str
    handler: MessageHandler


class Broker(abc.ABC):
    """Cross-node pub/sub, presence registry, ephemeral values and counters.

    Call :meth:`start` before use and :meth:`close` at shutdown. All methods
    raise :class:`BrokerError` when a name is invalid (empty, longer than
    ``MAX_NAME_LENGTH``, not ASCII), a payload is not bytes or exceeds
    ``MAX_PAYLOAD_BYTES``, a TTL is not a finite number > 0, the broker is not
    started or already closed, or the backend is unreachable.
    """

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (and start listeners). Idempotent.

        Raises :class:`BrokerError` if the backend does not answer or the broker
        was closed (a closed broker cannot be restarted; build a new one).
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Drop all subscriptions and disconnect. Idempotent."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the backend answers (used by ``/readyz``); never raises.

        False before :meth:`start`, after :meth:`close`, or when the backend (or,
        for Redis, the pub/sub listener) is down.
        """

    # -- pub/sub -----------------------------------------------------------
    @abc.abstractmethod
    async def publish(self, topic: str, payload: bytes) -> None:
        """Deliver ``payload`` to every current subscription of ``topic``."""

    @abc.abstractmethod
    async def subscribe(self, topic: str, handler: MessageHandler) -> Subscription:
        """Call ``handler`` for each later message on ``topic`` until unsubscribed.

        When this returns, the subscription is active: a message published
        afterwards (from any node) reaches it.
        """

    @abc.abstractmethod
    async def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to ``subscription``. Unknown handles are ignored.

        Once this returns the handler is never called again, even for messages
        already in flight.
        """

    # -- presence registry -----------------------------------------------------
    @abc.abstractmethod
    async def presence_set(self, key: str, member: str, value: bytes, ttl_s: float) -> None:
        """Add or refresh ``member`` under ``key`` with ``value``, expiring in ``ttl_s``.

        The last write wins; each refresh restarts the member's TTL.
        """

    @abc.abstractmethod
    async def presence_remove(self, key: str, member: str) -> None:
        """Remove ``member`` from ``key`` now."""

    @abc.abstractmethod
    async def presence_get(self, key: str) -> dict[str, bytes]:
        """The unexpired members of ``key`` with their values."""

    # -- ephemeral values ------------------------------------------------------
    @abc.abstractmethod
    async def set_value(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any, expiring after ``ttl_s``."""

    @abc.abstractmethod
    async def set_if_absent(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        """Atomically store ``value`` only when ``key`` is absent; True if stored."""

    @abc.abstractmethod
    async def get_value(self, key: str) -> bytes | None:
        """The unexpired value of ``key``, or None."""

    @abc.abstractmethod
    async def pop_value(self, key: str) -> bytes | None:
        """Atomically read and delete ``key`` (single-use tickets); None if absent."""

    @abc.abstractmethod
    async def delete_value(self, key: str) -> None:
        """Delete ``key`` (value or counter) if present."""

    # -- counters ----------------------------------------------------------------
    @abc.abstractmethod
    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        """Atomically add ``amount`` and return the new value.

        ``ttl_s`` applies when the counter is created by this call (a fixed
        window); later increments keep the original expiry.
        """

    # -- batched calls (defaults: one call per item; Redis overrides with pipelines) --
    async def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """``publish`` each ``(topic, payload)`` in order (one round trip on Redis)."""
        for topic, payload in messages:
            await self.publish(topic, payload)

    async def subscribe_many(
        self, topics: Sequence[str], handler: MessageHandler
    ) -> list[Subscription]:
        """``subscribe`` ``handler`` to each topic; active for all when this returns.

        On failure no subscription of this call is left behind.
        """
        subs: list[Subscription] = []
        try:
            for topic in topics:
                subs.append(await self.subscribe(topic, handler))
        except BaseException:
            await self.unsubscribe_many(subs)
            raise
        return subs

    async def unsubscribe_many(self, subscriptions: Sequence[Subscription]) -> None:
        """``unsubscribe`` each handle."""
        for sub in subscriptions:
            await self.unsubscribe(sub)

    async def presence_set_many(
        self, entries: Sequence[tuple[str, str, bytes]], ttl_s: float
    ) -> None:
        """``presence_set(key, member, value, ttl_s)`` for each ``(key, member, value)``."""
        for key, member, value in entries:
            await self.presence_set(key, member, value, ttl_s)

    async def presence_remove_many(self, entries: Sequence[tuple[str, str]]) -> None:
        """``presence_remove(key, member)`` for each pair."""
        for key, member in entries:
            await self.presence_remove(key, member)

    async def presence_get_many(self, keys: Sequence[str]) -> dict[str, dict[str, bytes]]:
        """``presence_get`` of each key (keys with no member map to an empty dict)."""
        return {key: await self.presence_get(key) for key in keys}

    async def get_values(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        """``get_value`` of each key."""
        return {key: await self.get_value(key) for key in keys}

    async def set_values(
        self, items: Sequence[tuple[str, bytes]], ttl_s: float | None = None
    ) -> None:
        """``set_value(key, value, ttl_s)`` for each ``(key, value)``."""
        for key, value in items:
            await self.set_value(key, value, ttl_s)


def check_name(name: str) -> None:
    """Raise :class:`BrokerError` unless ``name`` is a valid topic or key."""
    if not name or len(name) > MAX_NAME_LENGTH or not name.isascii():
        raise BrokerError("invalid topic or key name")


def check_payload(payload: bytes) -> None:
    """Raise :class:`BrokerError` if ``payload`` is not bytes or is too large."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise BrokerError("payload must be bytes")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise BrokerError("payload too large")
