"""The EEG capability: technicians stream, interpreters watch and annotate (SPEC.md 15.5).

Pieces (each its own module): :mod:`.recording` (the node recording a stream:
accept, persist, acknowledge), :mod:`.feed` (a stream's ring and views on a
node), :mod:`.viewing` (the node's feeds, watch and backfill), :mod:`.relay`
(a node asks the recording node for its ring), :mod:`.annotations`,
:mod:`.access` (rule 8 of the policy, audit), :mod:`.store` (SQL),
:mod:`.rest` (exams over REST, in the accounts API's OpenAPI document) and
:mod:`.export` (EDF+/BDF+).

Channels: ``eeg:<stream>`` (RELIABLE, recovered from the annotation log:
annotations with their seq, and seq-0 ``stream`` / ``ack`` / ``revoked``
events), and ``eegv:<stream>.<mode>.<factor>`` (LOSSY, node-local: the view's
``eeg.view`` frames, ``gap`` events after skipped frames).

Audit: stream open/resume/close (``create`` / ``update``), every watch
(``subscribe``), backfill page and annotation list (``read``), annotation
changes, exports, and every refusal (``denied`` with the policy's reason).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any, ClassVar, Self

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from media.eeg.views import factor_for
from protocol.eeg import (
    EEG_TYPES,
    FORMATS,
    MAX_SAMPLES_FRAME_BYTES,
    SAMPLES_HEADER_BYTES,
    SAMPLES_KIND,
    EegBackfill,
    EegClock,
    EegClose,
    EegOpen,
    EegUnwatch,
    EegWatch,
    FrameError,
    check_meta,
    control_channel,
    decode_samples,
    stream_id,
    stream_number,
)
from protocol.errors import ErrorCode
from protocol.messages import ClientMessage, Event
from protocol.streams import StreamKind
from server.accounts.web import RestPart, Shell
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent
from server.broker.base import BrokerError
from server.capability import Capability, Node
from server.channels import ChannelClass, encode_event
from server.eeg import store
from server.eeg.access import EegAccess
from server.eeg.annotations import AnnotationRecovery, Annotations
from server.eeg.feed import end_message, topic_of
from server.eeg.metrics import EegMetrics, gap_marker
from server.eeg.publisher import OrderedPublisher
from server.eeg.recording import Recording, now_us
from server.eeg.relay import Relay
from server.eeg.rest import ExamApi, rest_part
from server.eeg.tables import TABLES
from server.eeg.viewing import Feeds, check_view
from server.peer import Peer
from server.policy import Action, Exam
from server.router import HandlerError, RequestContext, Router, StreamContext
from server.sendqueue import Delivery
from server.store.jobs import write

log = logging.getLogger(__name__)

#: Inbox notice kind: the user was removed from an exam; their sockets stop following it.
UNASSIGNED = "eeg.unassigned"


class Eeg(Capability):
    """The EEG capability of one node (see the module docstring)."""

    name: ClassVar[str] = "eeg"
    message_types: ClassVar[tuple[type[ClientMessage], ...]] = EEG_TYPES
    stream_kinds: ClassVar[tuple[StreamKind, ...]] = (SAMPLES_KIND,)
    policy_actions = frozenset({Action.EEG_STREAM, Action.EEG_VIEW, Action.EEG_ANNOTATE})
    tables = TABLES

    def __init__(self, node: Node) -> None:
        s = node.settings
        self.node_id = node.node_id
        self.db, self.keys, self.jobs, self.channels = (
            node.database,
            node.keys,
            node.writer,
            node.channels,
        )
        self.settings = s
        self.metrics = EegMetrics(node.registry)
        self.access = EegAccess(node.database, node.keys, node.audit)
        channels = node.channels
        recovery = AnnotationRecovery(node.database, node.keys)
        channels.define(ChannelClass("eeg", Delivery.RELIABLE, recovery))
        channels.define(ChannelClass("eegv", Delivery.LOSSY, gap_marker=gap_marker, local=True))
        channels.on_inbox(UNASSIGNED, self._on_unassigned)
        self.publisher = OrderedPublisher(
            node.broker,
            node.supervisor,
            max_bytes=s.eeg_publish_queue_bytes,
            on_dropped=self.metrics.publish_dropped.inc,
        )
        self.relay = Relay(
            node.broker, self.publisher.publish, node.node_id, lambda sid: self.feeds.get(sid)
        )
        self.feeds = Feeds(
            node_id=node.node_id,
            db=node.database,
            keys=node.keys,
            broker=node.broker,
            channels=channels,
            relay=self.relay,
            ring_seconds=s.eeg_ring_seconds,
            ring_max_bytes=s.eeg_ring_max_bytes,
            fill_timeout_s=s.eeg_fill_timeout_s,
            on_frames=self.metrics.view_frames.inc,
        )
        self.annotations = Annotations(node.database, node.keys, node.writer, channels, self.access)
        self.recordings: dict[int, Recording] = {}
        self.api = ExamApi(node, self.access, self._assignments_changed)

    @classmethod
    def build(cls, node: Node) -> Self:
        """The capability over the node's services."""
        return cls(node)

    @classmethod
    def add_commands(cls, subparsers: Any) -> None:
        """``medhub eeg export`` and ``medhub eeg streams`` (:mod:`server.eeg.cli`)."""
        from server.eeg.cli import add_commands

        add_commands(subparsers)

    def register(self, router: Router) -> None:
        """Route every ``eeg.*`` request, the ``eeg`` stream kind and ``eeg:`` resumes."""
        a = self.annotations
        router.add(EegOpen, self.open)
        router.add(EegClose, self.close_stream)
        router.add(EegClock, self.clock)
        router.add(EegWatch, self.watch)
        router.add(EegUnwatch, self.unwatch)
        router.add(EegBackfill, self.backfill)
        for msg_type, handler in zip(
            EEG_TYPES[6:], (a.annotate, a.edit, a.delete, a.list_annotations), strict=True
        ):
            router.add(msg_type, handler)  # type: ignore[arg-type]
        router.add_stream(SAMPLES_KIND, self.frame)
        router.add_resume("eeg", self.resume)

    async def start(self) -> None:
        """Subscribe to this node's relay topics."""
        await self.relay.start()

    async def close(self) -> None:
        """Write what every recording has pending, then leave the topics."""
        for rec in list(self.recordings.values()):
            await rec.drain(timeout_s=5.0)
            rec.stop()
        await self.publisher.close()
        await self.relay.close()
        await self.feeds.close()

    async def exam_people(self, exam_id: str) -> Exam | None:
        """The people of exam ``exam_id`` (None: no such exam): a
        :data:`server.facts.ExamPeople` for what is attached to exams (records)."""
        keys = self.keys
        row = await self.db.run(lambda c: store.get_exam(c, keys, exam_id), readonly=True)
        return None if row is None else row.people

    def rest(self, shell: Shell) -> RestPart:
        """The exams API and the EDF+ export (:mod:`server.eeg.rest`)."""
        return rest_part(self.api, shell)

    def health(self) -> dict[str, bool]:
        """The relay is subscribed."""
        return {"eeg.relay": self.relay.running}

    def rights_changed(self, user_id: str) -> None:
        """Forget cached decisions about ``user_id``."""
        self.access.forget(user_id=user_id)

    def connection_closed(self, peer: Peer) -> None:
        """A writer socket went away: its streams wait for the recorder to come back."""
        for rec in self.recordings.values():
            rec.unbind(peer)
        for sid in list(self.feeds.feeds):
            self._release_soon(sid)

    def _release_soon(self, sid: str) -> None:
        asyncio.get_running_loop().call_soon(self.feeds.release, sid)

    # -- recorder -----------------------------------------------------------------------
    async def open(self, ctx: RequestContext, msg: EegOpen) -> dict[str, Any]:
        """Start a stream for an exam, or resume one; this socket writes it from now on."""
        why = check_meta(msg.meta)
        if why is not None:
            raise HandlerError(ErrorCode.BAD_REQUEST, why)
        width = len(msg.meta.channels) * FORMATS[msg.meta.format][1]
        if SAMPLES_HEADER_BYTES + width > MAX_SAMPLES_FRAME_BYTES:
            raise HandlerError(ErrorCode.BAD_REQUEST, "one sample does not fit in a frame")
        exam = await self.access.check_exam(ctx, msg.exam, Action.EEG_STREAM)
        if exam.state == "cancelled":
            raise HandlerError(ErrorCode.CONFLICT, "the exam is cancelled")
        p, meta, keys, node = ctx.principal, msg.meta, self.keys, self.node_id
        if msg.stream is None:
            row = await self._create(ctx, msg)
        else:
            sid = msg.stream

            def take(c: Connection) -> tuple[store.StreamRow, list[AuditEvent]]:
                found = store.get_stream(c, sid)
                if found is None or found.exam_id != exam.id:
                    raise store.NotFound(sid)
                old = store.stream_meta(c, keys, sid, found.meta_version)
                if old.shape() != meta.shape() or len(old.channels) != len(meta.channels):
                    raise ValueError("shape")
                row = store.take_over(c, keys, sid, node, meta, p.user_id, now_us())
                return row, [self.access.event(ctx, AuditAction.UPDATE, "eeg_stream", sid)]

            try:
                row = await write(self.jobs, take)
            except store.NotFound as exc:
                raise self.access.missing(ctx, "eeg_stream", sid) from exc
            except store.Conflict as exc:
                raise HandlerError(ErrorCode.CONFLICT, "the stream is closed") from exc
            except ValueError as exc:
                raise HandlerError(
                    ErrorCode.BAD_REQUEST, "rate, format or channels differ from the stream's"
                ) from exc
        rec = self.recordings.get(row.number)
        if rec is None or rec.fenced:
            feed = await self.feeds.for_recording(row, meta)
            rec = Recording(
                row,
                meta,
                feed,
                keys=keys,
                jobs=self.jobs,
                publish=self.publisher.publish,
                persist_interval_s=self.settings.eeg_persist_interval_s,
                max_gap=int(self.settings.eeg_max_gap_s * meta.rate),
                on_fenced=self._fenced,
                count=self.metrics.count,
            )
            self.recordings[row.number] = rec
        else:
            rec.epoch = row.writer_epoch
        rec.bind(ctx.peer)
        return {
            "stream": row.id,
            "number": row.number,
            "acked": rec.durable_end,
            "accepted": rec.accepted_end,
            "meta_version": row.meta_version,
            "max_frame_bytes": MAX_SAMPLES_FRAME_BYTES,
        }

    async def _create(self, ctx: RequestContext, msg: EegOpen) -> store.StreamRow:
        p, keys, node = ctx.principal, self.keys, self.node_id
        for _ in range(5):
            number = secrets.randbelow(2**32 - 1) + 1
            sid = stream_id(number)

            def create(c: Connection, sid: str = sid, number: int = number) -> Any:
                row = store.create_stream(
                    c,
                    keys,
                    sid=sid,
                    number=number,
                    exam_id=msg.exam,
                    org_id=p.org_id,
                    by=p.user_id,
                    meta=msg.meta,
                    now_us=now_us(),
                    node=node,
                )
                return row, [self.access.event(ctx, AuditAction.CREATE, "eeg_stream", sid)]

            try:
                row: store.StreamRow = await write(self.jobs, create)
                return row
            except IntegrityError:
                continue  # the number is taken: draw another
        raise HandlerError(ErrorCode.CONFLICT, "no free stream number; retry")

    def _fenced(self, rec: Recording) -> None:
        if self.recordings.get(rec.number) is rec:
            del self.recordings[rec.number]
        rec.stop()
        if rec.writer is not None:
            rec.writer.send(
                Event(
                    ch=control_channel(rec.sid),
                    seq=0,
                    kind="stream",
                    data={"stream": rec.sid, "state": "moved"},
                )
            )
        self.feeds.moved_away(rec.sid)

    async def frame(self, ctx: StreamContext, payload: memoryview) -> None:
        """An ``eeg`` frame of a stream this socket writes (errors: see :mod:`.recording`)."""
        try:
            sf = decode_samples(payload)
        except FrameError as exc:
            raise HandlerError(ErrorCode.BAD_FRAME, str(exc)) from exc
        rec = self.recordings.get(sf.stream)
        if rec is None:
            raise HandlerError(ErrorCode.NOT_FOUND, f"stream {sf.stream} is not open on this node")
        rec.on_frame(ctx.peer, sf)

    async def close_stream(self, ctx: RequestContext, msg: EegClose) -> dict[str, Any]:
        """End a recording: write what is pending, mark it closed, tell the viewers."""
        await self.access.authorise(ctx, msg.stream, Action.EEG_STREAM)
        rec = self.recordings.get(stream_number(msg.stream))
        if rec is None or rec.writer is not ctx.peer:
            raise HandlerError(ErrorCode.CONFLICT, "this socket does not write the stream")
        if not await rec.drain():
            raise HandlerError(
                ErrorCode.UNAVAILABLE, "samples not stored yet; retry", retry_after_s=1.0
            )
        sid, epoch, end = rec.sid, rec.epoch, rec.durable_end

        def close(c: Connection) -> tuple[bool, list[AuditEvent]]:
            ok = store.close_stream(c, sid, epoch, now_us())
            return ok, [self.access.event(ctx, AuditAction.UPDATE, "eeg_stream", sid, "closed")]

        if not await write(self.jobs, close):
            raise HandlerError(ErrorCode.CONFLICT, "the stream moved to another node")
        rec.stop()
        del self.recordings[rec.number]
        rec.feed.push_gap(rec.feed.ring.end, end)
        rec.feed.closed = True
        self.publisher.publish(topic_of(sid), end_message(end))
        ch = control_channel(sid)
        self.channels.publish(
            ch, encode_event(ch, 0, "stream", {"stream": sid, "state": "closed", "end": end})
        )
        self._release_soon(sid)
        return {"stream": sid, "end": end}

    async def clock(self, ctx: RequestContext, msg: EegClock) -> dict[str, Any]:
        """A clock round; the hub keeps the offset of the lowest round trip."""
        hub = now_us()
        await self.access.authorise(ctx, msg.stream, Action.EEG_STREAM)
        rec = self.recordings.get(stream_number(msg.stream))
        if rec is None or rec.writer is not ctx.peer:
            raise HandlerError(ErrorCode.CONFLICT, "this socket does not write the stream")
        if msg.last is not None:
            better = rec.clock(msg.last.t0, msg.last.hub_us, msg.last.t1)
            if better is not None:
                sid, (offset, rtt) = rec.sid, better

                def keep(c: Connection) -> tuple[None, list[AuditEvent]]:
                    store.set_clock(c, sid, offset, rtt)
                    return None, []

                await write(self.jobs, keep)
        out: dict[str, Any] = {"hub_us": hub}
        if rec.clock_best is not None:
            out["rtt_us"], out["offset_us"] = rec.clock_best
        return out

    # -- viewers ---------------------------------------------------------------------------
    async def watch(self, ctx: RequestContext, msg: EegWatch) -> dict[str, Any]:
        """Follow a stream live as a view; answers where live frames start (``live_from``)."""
        row, _exam = await self.access.authorise(ctx, msg.stream, Action.EEG_VIEW)
        try:
            feed = await self.feeds.ensure(row)
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        try:
            factor = factor_for(msg.view, feed.meta.rate, msg.rate)
        except ValueError as exc:
            raise HandlerError(ErrorCode.BAD_REQUEST, str(exc)) from exc
        ann = await self.annotations.follow(ctx, msg.stream, None)
        vs = feed.view(msg.view, factor)
        for other in feed.views.values():  # one view of a stream per socket
            if other is not vs:
                self.channels.detach(ctx.peer, other.channel)
        await self.channels.attach(ctx.peer, vs.channel)  # node-local: no broker call
        live_from = vs.next  # read with no await since the attach: no frame in between
        rec = self.recordings.get(row.number)
        clock = rec.clock_best[1] if rec is not None and rec.clock_best else row.clock_offset_us
        self.access.audit(
            ctx, AuditAction.SUBSCRIBE, "eeg_stream", msg.stream, f"{msg.view}.{factor}"
        )
        return {
            "stream": row.id,
            "number": row.number,
            "state": "closed" if feed.closed else "live",
            "meta": feed.meta,
            "view": {
                "mode": msg.view,
                "factor": factor,
                "rate": feed.meta.rate / factor,
                "format": vs.format,
            },
            "live_from": live_from,
            "first": vs.view.first(feed.ring),
            "end": feed.ring.end,
            "clock_offset_us": clock,
            **ann,
        }

    async def unwatch(self, ctx: RequestContext, msg: EegUnwatch) -> dict[str, Any]:
        """Stop following every view and the control channel of a stream."""
        feed = self.feeds.get(msg.stream)
        if feed is not None:
            for vs in feed.views.values():
                self.channels.detach(ctx.peer, vs.channel)
        self.channels.detach(ctx.peer, control_channel(msg.stream))
        self.feeds.release(msg.stream)
        self.access.audit(ctx, AuditAction.UNSUBSCRIBE, "eeg_stream", msg.stream)
        return {}

    async def backfill(self, ctx: RequestContext, msg: EegBackfill) -> dict[str, Any]:
        """A page of outputs ``[first, end)`` (frames flagged backfill, then this result)."""
        row, _exam = await self.access.authorise(ctx, msg.stream, Action.EEG_VIEW)
        try:
            view = check_view(msg.view, msg.factor)
        except ValueError as exc:
            raise HandlerError(ErrorCode.BAD_REQUEST, str(exc)) from exc
        frames, nxt, missing, source = await self.feeds.page(row, view, msg.first, msg.end)
        for f in frames:
            ctx.peer.send_frame(f, "eeg.view")
        self.metrics.pages.labels(source).inc()
        self.access.audit(ctx, AuditAction.READ, "eeg_stream", msg.stream, f"backfill.{source}")
        return {
            "first": msg.first,
            "end": nxt,
            "more": msg.first < nxt < msg.end,
            "missing": missing,
        }

    async def resume(self, ctx: RequestContext, channel: str, seq: int) -> dict[str, Any]:
        """``hello.resume`` of ``eeg:<stream>``: the annotation log after ``seq``, then live."""
        sid = channel.partition(":")[2]
        try:
            stream_number(sid)
        except ValueError as exc:
            raise HandlerError(ErrorCode.BAD_REQUEST, "not an eeg stream channel") from exc
        await self.access.authorise(ctx, sid, Action.EEG_VIEW)
        self.access.audit(ctx, AuditAction.SUBSCRIBE, "eeg_stream", sid, "annotations")
        return await self.annotations.follow(ctx, sid, seq)

    # -- assignments -------------------------------------------------------------------------
    def _assignments_changed(self, exam_id: str, removed: set[str]) -> None:
        """An exam's people changed (REST, this node): forget decisions, tell the removed."""
        self.access.forget(exam_id=exam_id)
        if removed:
            self.channels.notify_users(sorted(removed), UNASSIGNED, {"exam": exam_id})

    def _on_unassigned(self, user: str, peers: list[Peer], data: Any) -> None:
        """``user`` left an exam: their sockets stop following and writing its streams."""
        try:
            exam_id = str(data["exam"])
        except (KeyError, TypeError):
            return
        self.access.forget(user_id=user)
        for rec in self.recordings.values():
            if rec.exam_id == exam_id and rec.writer in peers:
                rec.writer = None
        for feed in list(self.feeds.feeds.values()):
            if feed.exam_id != exam_id:
                continue
            ctl = control_channel(feed.sid)
            for peer in peers:
                if not self.channels.following(peer, ctl):
                    continue
                for vs in feed.views.values():
                    self.channels.detach(peer, vs.channel)
                self.channels.detach(peer, ctl)
                peer.send(
                    Event(
                        ch=ctl, seq=0, kind="stream", data={"stream": feed.sid, "state": "revoked"}
                    )
                )
            self._release_soon(feed.sid)
