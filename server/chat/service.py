"""The chat capability: request handlers over the store, the writer and the node channels.

A conversation is the RELIABLE channel ``conv:<id>`` of the node channel
service (ordered by seq, recovered from the store: :class:`ChatRecovery`).
The members of a new conversation hear of it through their inboxes, on
every node (inbox kind :data:`CREATED`).

Every handler authorises with :mod:`server.policy` (rule 5) and
audits (:mod:`server.chat.access`): ``create`` for a conversation or message,
``update`` / ``delete`` for an edit, a delete or a receipt, ``read`` for
history, sync and listing, ``denied`` (with the policy's reason) for each
refusal. Audit entries carry pseudonymous ids only, never a text. Decisions
are cached per (user, conversation, action) for ``access_ttl_s`` seconds: a
revoked right stops working within that time.

Handler errors (``HandlerError``): ``not_found`` (no such conversation,
message or consultation, or an unknown member), ``forbidden`` (the policy
refused), ``bad_request`` (a direct conversation with itself, a message
already deleted), ``unavailable`` (the store or the broker failed).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Sequence
from typing import Any, ClassVar, Self

import msgspec
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from protocol.chat import (
    MAX_PAGE,
    TYPING_INTERVAL_S,
    ChatCreate,
    ChatDelete,
    ChatEdit,
    ChatEvent,
    ChatHistory,
    ChatList,
    ChatReceipt,
    ChatSend,
    ChatSync,
    ChatTyping,
    ChatUnfollow,
    ChatVersions,
    channel_of,
)
from protocol.errors import ErrorCode
from protocol.messages import ID_PATTERN, ClientMessage, Event
from server import policy
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent, AuditRecorder
from server.broker.base import BrokerError
from server.capability import Capability, Node
from server.channels import ChannelClass, ChannelService, encode_event, send_events
from server.chat import store
from server.chat.access import ChatAccess
from server.chat.tables import chat_conversation, chat_member, chat_message, chat_message_version
from server.chat.writer import ChatWriter, Stored, WriterClosedError
from server.facts import Facts
from server.peer import Peer
from server.policy import Action
from server.router import Deferred, HandlerError, RequestContext, Router
from server.security.crypto import Keyring
from server.sendqueue import Delivery
from server.store.db import Database
from server.store.jobs import JobWriter, write

log = logging.getLogger(__name__)

#: Seconds an access decision is reused for the same user, conversation and action.
ACCESS_TTL_S = 5.0
#: Inbox notice kind telling a user's sockets that they are a member of a new conversation.
CREATED = "chat.conversation"


ID_RE = re.compile(ID_PATTERN)

#: Bytes of events one history page or sync step carries at most (text and overhead):
#: a page never fills a socket's send queue (``ws_send_queue_max_bytes``).
PAGE_BYTES = 256 * 1024
#: Bytes counted per event besides its text (ids, seq, times, framing).
EVENT_OVERHEAD_BYTES = 200


def page_fit(events: Sequence[ChatEvent], budget: int) -> int:
    """How many of ``events`` (in order) fit in ``budget`` bytes; at least one."""
    used = 0
    for i, ev in enumerate(events):
        used += EVENT_OVERHEAD_BYTES + (len(ev.text.encode()) if ev.text else 0)
        if used > budget and i > 0:
            return i
    return len(events)


def conv_of(channel: str) -> str:
    """The conversation id of channel ``conv:<id>``."""
    return channel.partition(":")[2]


class ChatRecovery:
    """Where the channels read what followers of a conversation missed (the store)."""

    def __init__(self, db: Database, keys: Keyring) -> None:
        self.db, self.keys = db, keys

    async def read_range(self, channel: str, after: int, until: int) -> list[tuple[int, bytes]]:
        """Committed events with ``after < seq < until``, as msgpack event frames."""
        conv, keys, limit = conv_of(channel), self.keys, max(until - after - 1, 1)
        evs = await self.db.run(
            lambda c: store.events(c, keys, conv, after=after, limit=limit), readonly=True
        )
        return [(e.seq, encode_event(channel, e.seq, e.kind, e)) for e in evs if e.seq < until]

    async def last_seqs(self, channels: Sequence[str]) -> dict[str, int]:
        """The last committed seq of each existing conversation among ``channels``."""
        convs = [conv_of(c) for c in channels]
        lasts = await self.db.run(lambda c: store.last_seqs(c, convs), readonly=True)
        return {channel_of(conv): seq for conv, seq in lasts.items()}


class Chat(Capability):
    """Chat of one node (see the module docstring)."""

    name: ClassVar[str] = "chat"
    message_types: ClassVar[tuple[type[ClientMessage], ...]] = (
        ChatCreate, ChatList, ChatSend, ChatEdit, ChatDelete, ChatHistory, ChatSync,
        ChatUnfollow, ChatReceipt, ChatTyping, ChatVersions,
    )  # fmt: skip
    policy_actions: ClassVar[frozenset[Action]] = frozenset({Action.CHAT_READ, Action.CHAT_WRITE})
    tables = (chat_conversation, chat_member, chat_message, chat_message_version)

    def __init__(
        self,
        db: Database,
        channels: ChannelService,
        keys: Keyring,
        facts: Facts,
        audit: AuditRecorder,
        writer: JobWriter,
        *,
        access_ttl_s: float = ACCESS_TTL_S,
    ) -> None:
        self.db, self.keys, self.facts, self.audit = db, keys, facts, audit
        self.channels = channels
        self.broker = channels.broker
        channels.define(ChannelClass("conv", Delivery.RELIABLE, ChatRecovery(db, keys)))
        channels.on_inbox(CREATED, self._on_created)
        self.jobs = writer
        self.writer = ChatWriter(writer, keys, self._committed)
        self.access = ChatAccess(db, keys, facts, audit, access_ttl_s)
        self.page_bytes = PAGE_BYTES

    @classmethod
    def build(cls, node: Node) -> Self:
        """Chat over the node's database, channels and facts."""
        return cls(node.database, node.channels, node.keys, node.facts, node.audit, node.writer)

    def register(self, router: Router) -> None:
        """Route every chat request type to its handler."""
        router.add(ChatCreate, self.create)
        router.add(ChatList, self.list)
        router.add(ChatSend, self.send)
        router.add(ChatEdit, self.edit)
        router.add(ChatDelete, self.delete)
        router.add(ChatHistory, self.history)
        router.add(ChatSync, self.sync)
        router.add(ChatUnfollow, self.unfollow)
        router.add(ChatReceipt, self.receipt)
        router.add(ChatTyping, self.typing)
        router.add(ChatVersions, self.versions)
        router.add_resume("conv", self.resume)

    async def close(self) -> None:
        """Write what is queued (the channels publish it)."""
        await self.writer.close()

    def rights_changed(self, user_id: str) -> None:
        """Forget cached access decisions about ``user_id``."""
        self.access.forget(user_id)

    def health(self) -> dict[str, bool]:
        """The writer is running."""
        return {"chat.writer": self.writer.running}

    def _on_created(self, user: str, peers: list[Peer], data: Any) -> None:
        """A conversation ``user`` is a member of was created (on any node): tell its sockets."""
        try:
            conv, kind, members = str(data["conv"]), str(data["kind"]), list(data["members"])
        except (KeyError, TypeError):
            log.warning("malformed chat.conversation notice")
            return
        channel = channel_of(conv)
        event = Event(
            ch=channel, seq=0, kind="conversation",
            data={"conv": conv, "kind": kind, "members": members},
        )  # fmt: skip
        for peer in peers:
            if not self.channels.following(peer, channel):
                peer.send(event)

    def _committed(self, conv: str, events: list[ChatEvent]) -> None:
        channel = channel_of(conv)
        self.channels.committed(
            channel, [(ev.seq, encode_event(channel, ev.seq, ev.kind, ev)) for ev in events]
        )

    # -- conversations ------------------------------------------------------------------
    async def create(self, ctx: RequestContext, msg: ChatCreate) -> dict[str, Any]:
        """Create or find a conversation (see ``ChatCreate``); the socket follows it."""
        p = ctx.principal
        subject = await self.access.subject(ctx)
        members: dict[str, str]
        patient: str | None = None
        direct_key = None
        if msg.kind == "consultation":
            if msg.consultation is None:
                raise HandlerError(ErrorCode.BAD_REQUEST, "consultation id required")
            members, patient = await self._consultation_members(ctx, subject, msg.consultation)
        else:
            others = sorted(set(msg.members) - {p.user_id})
            if not others or (msg.kind == "direct" and len(others) != 1):
                raise HandlerError(
                    ErrorCode.BAD_REQUEST, "a direct conversation has one other member"
                )
            found = await self.facts.users(others)
            if len(found) != len(others):
                raise self.access.deny(
                    ctx, "user", next(u for u in others if u not in found), "unknown_user"
                )
            decision = policy.staff_conversation(
                subject, (policy.Subject(u, f.org_id, f.role) for u, f in found.items())
            )
            if not decision:
                raise self.access.deny(ctx, "conversation", "new", decision.reason)
            members = {u: f.role for u, f in found.items()}
            members[p.user_id] = p.role
            if msg.kind == "direct":
                direct_key = "|".join(sorted(members))
        conv_id, created = await self._insert(ctx, msg, members, patient, direct_key)
        try:
            # a new conversation has nothing to replay (an old one: use chat.sync)
            await self.channels.attach(ctx.peer, channel_of(conv_id))
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        if created:
            notice = {"conv": conv_id, "kind": msg.kind, "members": sorted(members)}
            # at most once; members also find it with chat.list
            self.channels.notify_users(sorted(members), CREATED, notice)
        return {"conv": conv_id, "created": created}

    async def _consultation_members(
        self, ctx: RequestContext, subject: policy.Subject, consultation: str
    ) -> tuple[dict[str, str], str]:
        c = await self.facts.consultation(consultation)
        if c is None:
            raise HandlerError(ErrorCode.NOT_FOUND, "no such consultation")
        rels = policy.Facts(await self.facts.relationships_of([c.patient_id]))
        target = policy.Target(
            "conversation", c.org_id, patient_id=c.patient_id, ref_id=consultation
        )
        decision = policy.decide(subject, Action.CHAT_WRITE, target, rels)
        if not decision:
            raise self.access.deny(ctx, "consultation", consultation, decision.reason)
        delegations = await self.facts.delegations_of(c.practitioners)
        ids = {c.patient_id, *c.practitioners}
        ids |= {
            d.delegate_id for d in delegations
            if d.practitioner_id in c.practitioners and "consultations" in d.scopes
        }  # fmt: skip
        facts = await self.facts.users(ids)
        members = {u: f.role for u, f in facts.items() if f.org_id == c.org_id}
        if ctx.principal.user_id not in members:
            raise self.access.deny(ctx, "consultation", consultation, "not_participant")
        return members, c.patient_id

    async def _insert(
        self, ctx: RequestContext, msg: ChatCreate, members: dict[str, str],
        patient: str | None, direct_key: str | None,
    ) -> tuple[str, bool]:  # fmt: skip
        p, keys = ctx.principal, self.keys

        def insert(conn: Connection) -> tuple[tuple[str, bool], list[AuditEvent]]:
            existing = None
            if direct_key is not None:
                existing = store.find_conversation(conn, direct_key=direct_key)
            elif msg.consultation is not None:
                existing = store.find_conversation(conn, consultation_id=msg.consultation)
            if existing is not None:
                return (existing, False), []
            conv_id = "c-" + secrets.token_hex(8)
            store.create_conversation(
                conn, keys, conv=conv_id, kind=msg.kind, org=p.org_id, created_by=p.user_id,
                members=members, title=msg.title, consultation_id=msg.consultation,
                patient_id=patient, direct_key=direct_key,
            )  # fmt: skip
            audit = self.access.event(ctx, AuditAction.CREATE, "conversation", conv_id)
            return (conv_id, True), [audit]

        for _ in range(2):
            try:
                return await write(self.jobs, insert)
            except IntegrityError:
                continue  # created concurrently by another request: find it
        raise HandlerError(ErrorCode.CONFLICT, "conversation created concurrently; retry")

    async def list(self, ctx: RequestContext, msg: ChatList) -> dict[str, Any]:
        """A page of the caller's conversations with positions and unread counts.

        ``next`` (when ``more``) is the ``after`` of the next page.
        """
        p, keys = ctx.principal, self.keys
        page, more = await self.db.run(
            lambda c: store.conversations_of(c, keys, p.user_id, after=msg.after, limit=msg.limit),
            readonly=True,
        )
        out = [
            {"conv": e.conversation.id, "kind": e.conversation.kind,
             "title": e.conversation.title, "members": e.members,
             "last_seq": e.conversation.last_seq, "read_seq": e.me.read_seq,
             "delivered_seq": e.me.delivered_seq, "unread": e.unread}
            for e in page
            if e.conversation.org == p.org_id
        ]  # fmt: skip
        self.access.audit(ctx, AuditAction.READ, "conversation_list", p.user_id)
        reply: dict[str, Any] = {"conversations": out, "more": more}
        if more and page:
            reply["next"] = page[-1].conversation.id
        return reply

    # -- messages ---------------------------------------------------------------------------
    async def send(self, ctx: RequestContext, msg: ChatSend) -> Deferred:
        """Store and publish a message; answers once committed (idempotent by client id).

        Authorised and queued in request order; the reply is deferred until the
        batch holding it commits, so one socket can have several sends in flight.
        """
        await self.access.authorise(ctx, msg.conv, Action.CHAT_WRITE)
        audit = self.access.event(ctx, AuditAction.CREATE, "chat_message", "pending")
        try:
            fut = self.writer.submit(
                msg.conv, ctx.principal.user_id, msg.client_msg_id, msg.text, msg.record, audit
            )
        except WriterClosedError as exc:
            raise _not_stored() from exc
        return Deferred(self._sent(fut))

    async def _sent(self, fut: asyncio.Future[Stored]) -> dict[str, Any]:
        try:
            stored = await fut
        except store.NoSuchConversation as exc:
            raise HandlerError(ErrorCode.NOT_FOUND, "no such conversation") from exc
        except (SQLAlchemyError, OSError, RuntimeError) as exc:
            raise _not_stored() from exc
        return {"seq": stored.seq, "duplicate": stored.duplicate}

    async def edit(self, ctx: RequestContext, msg: ChatEdit) -> dict[str, Any]:
        """Edit my message (a version is kept)."""
        ev = await self._change(ctx, msg.conv, msg.seq, msg.client_msg_id, msg.text)
        return {"seq": ev.seq, "version": ev.version}

    async def delete(self, ctx: RequestContext, msg: ChatDelete) -> dict[str, Any]:
        """Delete my message (its versions are kept)."""
        ev = await self._change(ctx, msg.conv, msg.seq, msg.client_msg_id, None)
        return {"seq": ev.seq}

    async def _change(
        self, ctx: RequestContext, conv: str, target: int, client_msg_id: str, text: str | None
    ) -> ChatEvent:
        await self.access.authorise(ctx, conv, Action.CHAT_WRITE)
        keys, actor = self.keys, ctx.principal.user_id
        action = AuditAction.UPDATE if text is not None else AuditAction.DELETE
        audit = [self.access.event(ctx, action, "chat_message", f"{conv}.{target}")]

        def change(c: Connection) -> tuple[ChatEvent, list[AuditEvent]]:
            ev = store.change_message(
                c, keys, conv=conv, target=target, actor=actor, client_msg_id=client_msg_id,
                text=text,
            )  # fmt: skip
            return ev, audit

        try:
            ev = await write(self.jobs, change)
        except store.NoSuchMessage as exc:
            raise HandlerError(ErrorCode.NOT_FOUND, "no such message") from exc
        except store.NotTheAuthor as exc:
            raise self.access.deny(ctx, "chat_message", f"{conv}.{target}", "not_author") from exc
        except store.AlreadyDeleted as exc:
            raise HandlerError(ErrorCode.BAD_REQUEST, "message already deleted") from exc
        self._committed(conv, [ev])
        return ev

    async def versions(self, ctx: RequestContext, msg: ChatVersions) -> dict[str, Any]:
        """Earlier versions of a message (who changed it, when, and the text before)."""
        await self.access.authorise(ctx, msg.conv, Action.CHAT_READ)
        keys = self.keys
        found = await self.db.run(
            lambda c: store.versions(c, keys, msg.conv, msg.seq), readonly=True
        )
        self.access.audit(ctx, AuditAction.READ, "chat_message", f"{msg.conv}.{msg.seq}")
        return {"versions": found}

    # -- reading ------------------------------------------------------------------------------
    async def history(self, ctx: RequestContext, msg: ChatHistory) -> dict[str, Any]:
        """A page of events before or after a seq, ascending."""
        await self.access.authorise(ctx, msg.conv, Action.CHAT_READ)
        keys = self.keys
        evs = await self.db.run(
            lambda c: store.events(
                c, keys, msg.conv, after=msg.after, before=msg.before, limit=msg.limit + 1
            ),
            readonly=True,
        )
        more = len(evs) > msg.limit
        forward = msg.after is not None
        evs = evs[: msg.limit] if forward else evs[len(evs) - min(len(evs), msg.limit) :]
        fit = page_fit(evs if forward else evs[::-1], self.page_bytes)
        if fit < len(evs):  # cut by bytes: the client asks again from where it stopped
            more = True
            evs = evs[:fit] if forward else evs[len(evs) - fit :]
        self.access.audit(ctx, AuditAction.READ, "conversation", msg.conv)
        return {"events": [msgspec.to_builtins(e) for e in evs], "more": more}

    async def sync(self, ctx: RequestContext, msg: ChatSync) -> dict[str, Any]:
        """Replay what the socket missed after ``after_seq``, then follow live.

        An ``after_seq`` beyond the conversation's last seq is clamped to it:
        the reply's ``last_seq`` is then lower than ``after_seq`` and every
        later event is delivered (never filtered by the client's bad position).
        """
        return await self._sync(ctx, msg.conv, msg.after_seq, msg.limit)

    async def resume(self, ctx: RequestContext, channel: str, seq: int) -> dict[str, Any]:
        """``hello.resume`` of a conversation channel: ``chat.sync`` after ``seq``."""
        conv = conv_of(channel)
        if not ID_RE.fullmatch(conv):
            raise HandlerError(ErrorCode.BAD_REQUEST, "not a conversation channel")
        return await self._sync(ctx, conv, seq, MAX_PAGE)

    async def _sync(
        self, ctx: RequestContext, conv: str, after_seq: int, limit: int
    ) -> dict[str, Any]:
        await self.access.authorise(ctx, conv, Action.CHAT_READ)
        peer = ctx.peer
        ch = channel_of(conv)
        try:
            att = await self.channels.attach(peer, ch, buffering=True)
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        keys = self.keys

        def read(c: Connection) -> tuple[int, list[ChatEvent]]:
            current = store.last_seqs(c, [conv]).get(conv, 0)
            return current, store.events(c, keys, conv, after=after_seq, limit=limit + 1)

        try:
            current, evs = await self.db.run(read, readonly=True)
        except BaseException:
            self.channels.detach(peer, ch)
            raise
        caught_up = len(evs) <= limit
        evs = evs[:limit]
        fit = page_fit(evs, self.page_bytes)
        if fit < len(evs):  # cut by bytes: the client syncs again from the last seq
            caught_up, evs = False, evs[:fit]
        if evs:
            send_events(peer, [(ev.seq, encode_event(ch, ev.seq, ev.kind, ev)) for ev in evs])
        # read before the events: any seq above it is either replayed or delivered live
        last = evs[-1].seq if evs else min(after_seq, current)
        if caught_up:
            att.go_live(last)
        else:
            self.channels.detach(peer, ch)
        self.access.audit(ctx, AuditAction.READ, "conversation", conv)
        return {"last_seq": last, "caught_up": caught_up}

    async def unfollow(self, ctx: RequestContext, msg: ChatUnfollow) -> dict[str, Any]:
        """Stop following a conversation on this socket."""
        self.channels.detach(ctx.peer, channel_of(msg.conv))
        return {}

    # -- receipts and typing ----------------------------------------------------------------------
    async def receipt(self, ctx: RequestContext, msg: ChatReceipt) -> dict[str, Any]:
        """Move my delivered / read position forward and tell the followers."""
        await self.access.authorise(ctx, msg.conv, Action.CHAT_READ)
        user = ctx.principal.user_id
        audit = [self.access.event(ctx, AuditAction.UPDATE, "chat_receipt", msg.conv)]
        try:
            me = await write(
                self.jobs,
                lambda c: (store.advance_receipt(c, msg.conv, user, msg.kind, msg.seq), audit),
            )
        except store.NotAMember as exc:
            raise HandlerError(ErrorCode.NOT_FOUND, "not a member") from exc
        data = {"user": user, "delivered_seq": me.delivered_seq, "read_seq": me.read_seq}
        ch = channel_of(msg.conv)
        self.channels.publish(ch, encode_event(ch, 0, "receipt", data))
        return {"delivered_seq": me.delivered_seq, "read_seq": me.read_seq}

    async def typing(self, ctx: RequestContext, msg: ChatTyping) -> dict[str, Any]:
        """Forward a typing indicator, at most one per user per conversation per interval."""
        await self.access.authorise(ctx, msg.conv, Action.CHAT_WRITE)
        user = ctx.principal.user_id
        try:
            fresh = await self.broker.set_if_absent(
                f"chat-typing:{msg.conv}:{user}", b"1", ttl_s=TYPING_INTERVAL_S
            )
            if fresh:
                ch = channel_of(msg.conv)
                await self.channels.publish(ch, encode_event(ch, 0, "typing", {"user": user}))
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        return {"forwarded": fresh}


def _not_stored() -> HandlerError:
    return HandlerError(ErrorCode.UNAVAILABLE, "message not stored; retry", retry_after_s=1.0)
