"""The capability seam: what a real-time capability registers, and its lifecycle.

A capability (presence, chat, calls, EEG) is one package with one class
deriving from :class:`Capability`. The composition root (``server/app.py``)
lists the classes; adding a capability is a new package plus one line there.
Nothing else in the hub names a capability.

What a capability declares (class attributes, read without building it):

- ``name``: a short id (metrics, logs, /readyz);
- ``message_types``: its client message types (``protocol/<name>.py``): each
  must be routed by :meth:`Capability.register`, checked at build time;
- ``stream_kinds``: its binary stream kinds (``protocol/streams.py``);
- ``policy_actions``: the :class:`server.policy.Action` values it decides with
  (documentation, and the policy table tests check every one has rows);
- ``tables``: its SQLAlchemy tables (migrations must create them: tested);
- :meth:`Capability.add_commands`: its ``medhub`` CLI sub-commands;
- :meth:`Capability.rest`: its REST endpoints under ``/api/v1`` (one app, one
  OpenAPI document with the accounts API).

What it receives (:class:`Node`, in :meth:`Capability.build`): the settings,
the database, the broker, the node channel service, the shared accounts facts,
the audit recorder, the node's write sequence (jobs committed with their
audit entries, :mod:`server.store.jobs`), the at-rest keyring, the metrics registry and the
supervisor of background tasks. It reaches other nodes only through the
broker and the channels, and the database only through its stores.

Lifecycle, called by :class:`Capabilities`: ``build`` -> ``register(router)``
-> ``start()`` -> ``connection_opened(peer)`` / ``connection_closed(peer)`` for
every authenticated socket -> ``close()`` (reverse order of the list).
``connection_opened`` / ``connection_closed`` run on the event loop and must
not block; an exception there is logged and does not affect the socket.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from protocol.messages import ClientMessage
from protocol.streams import StreamKind
from server.accounts.web import RestPart, Shell
from server.audit.events import AuditRecorder
from server.broker.base import Broker
from server.channels import ChannelService
from server.config import Settings
from server.facts import Facts
from server.peer import Peer
from server.policy import Action
from server.router import Router
from server.security.crypto import Keyring
from server.store.db import Database
from server.store.jobs import JobWriter
from server.supervise import Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Node:
    """Everything a capability may use, built once per process by the composition root."""

    settings: Settings
    node_id: str
    database: Database
    broker: Broker
    channels: ChannelService
    facts: Facts
    audit: AuditRecorder
    writer: JobWriter
    keys: Keyring
    registry: CollectorRegistry
    supervisor: Supervisor


class Capability:
    """Base class of a capability: no-op lifecycle, nothing declared (see the module doc)."""

    name: ClassVar[str] = ""
    message_types: ClassVar[tuple[type[ClientMessage], ...]] = ()
    stream_kinds: ClassVar[tuple[StreamKind, ...]] = ()
    policy_actions: ClassVar[frozenset[Action]] = frozenset()
    tables: ClassVar[tuple[sa.Table, ...]] = ()

    @classmethod
    def build(cls, node: Node) -> Self:
        """Build the capability from the node's services (no I/O: :meth:`start` does it)."""
        raise NotImplementedError

    @classmethod
    def add_commands(cls, subparsers: Any) -> None:
        """Add ``medhub`` sub-commands (``argparse`` sub-parsers); none by default."""

    def register(self, router: Router) -> None:
        """Route every message type and stream kind of ``message_types`` / ``stream_kinds``."""

    async def start(self) -> None:
        """Start background work (subscriptions, writers); called once, in the lifespan."""

    def connection_opened(self, peer: Peer) -> None:
        """``peer`` was welcomed (``peer.principal`` is set)."""

    def connection_closed(self, peer: Peer) -> None:
        """``peer`` is gone; forget it."""

    def rights_changed(self, user_id: str) -> None:
        """``user_id``'s rights changed (role, status, delegation, care): forget cached
        decisions about them. Their sockets are being closed (4011)."""

    async def close(self) -> None:
        """Stop: flush what must be written, drop subscriptions."""

    def health(self) -> dict[str, bool]:
        """Checks for ``/readyz`` (``{"<name>.<check>": ok}``); none by default."""
        return {}

    def rest(self, shell: Shell) -> RestPart | None:
        """What it adds to ``/api/v1`` (endpoints authenticated by ``shell``); none by default."""
        return None


class CapabilityError(Exception):
    """A capability's declaration does not match what it registered."""


class Capabilities:
    """The capabilities of one node, built from their classes, in list order."""

    def __init__(self, classes: Sequence[type[Capability]], node: Node, router: Router) -> None:
        names = [c.name for c in classes]
        if len(set(names)) != len(names) or not all(names):
            raise CapabilityError(f"capability names must be set and unique: {names}")
        self.items: list[Capability] = [cls.build(node) for cls in classes]
        for cap in self.items:
            cap.register(router)
            missing = router.unrouted(cap.message_types)
            if missing:
                raise CapabilityError(f"{cap.name} declares but does not route: {missing}")
            for kind in cap.stream_kinds:
                if router.stream_for(kind.code) is None:
                    raise CapabilityError(f"{cap.name} declares stream {kind.name} unrouted")

    def get(self, name: str) -> Capability:
        """The capability named ``name``; KeyError when it is not in this node."""
        for cap in self.items:
            if cap.name == name:
                return cap
        raise KeyError(name)

    async def start(self) -> None:
        """Start each capability, in list order."""
        for cap in self.items:
            await cap.start()

    async def close(self) -> None:
        """Close each capability, in reverse order; a failure is logged, the rest still close."""
        for cap in reversed(self.items):
            try:
                await cap.close()
            except Exception:
                log.exception("capability close failed", extra={"capability": cap.name})

    def connection_opened(self, peer: Peer) -> None:
        """Tell every capability (a failure is logged, the others are still told)."""
        for cap in self.items:
            try:
                cap.connection_opened(peer)
            except Exception:
                log.exception("connection_opened failed", extra={"capability": cap.name})

    def connection_closed(self, peer: Peer) -> None:
        """Tell every capability (a failure is logged, the others are still told)."""
        for cap in self.items:
            try:
                cap.connection_closed(peer)
            except Exception:
                log.exception("connection_closed failed", extra={"capability": cap.name})

    def rights_changed(self, user_id: str) -> None:
        """Tell every capability (a failure is logged, the others are still told)."""
        for cap in self.items:
            try:
                cap.rights_changed(user_id)
            except Exception:
                log.exception("rights_changed failed", extra={"capability": cap.name})

    def health(self) -> dict[str, bool]:
        """Every capability's ``/readyz`` checks."""
        out: dict[str, bool] = {}
        for cap in self.items:
            out.update(cap.health())
        return out

    def rest(self, shell: Shell) -> list[RestPart]:
        """Every capability's ``/api/v1`` part, in list order."""
        return [part for cap in self.items if (part := cap.rest(shell)) is not None]

    def add_commands(self, subparsers: Any) -> None:
        """Each capability's CLI sub-commands."""
        for cap in self.items:
            cap.add_commands(subparsers)


def add_capability_commands(classes: Sequence[type[Capability]], subparsers: Any) -> None:
    """The CLI sub-commands of capability classes (the CLI builds no node)."""
    for cls in classes:
        cls.add_commands(subparsers)


__all__ = [
    "Capabilities",
    "Capability",
    "CapabilityError",
    "Node",
    "add_capability_commands",
]
