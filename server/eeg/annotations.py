"""Annotations: created, edited and deleted by the exam's interpreters and technician.

Each change is a row of ``eeg_annotation_log`` numbered per stream (``seq``
from 1), written with its audit entry in one transaction, then delivered as
an event of kind ``annotation`` with that seq on the stream's RELIABLE control
channel ``eeg:<stream>``: ordered, never dropped (a socket too slow for it is
closed 4009), recovered from the log on every node (:class:`AnnotationRecovery`),
and resumable with ``hello.resume`` (the log after the seq the client had).
``eeg.annotate`` is idempotent per author and ``client_id``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Connection

from protocol.eeg import (
    EegAnnotate,
    EegAnnotationDelete,
    EegAnnotationEdit,
    EegAnnotations,
    control_channel,
)
from protocol.errors import ErrorCode
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent
from server.broker.base import BrokerError
from server.channels import ChannelService, encode_event, send_events
from server.eeg import annotation_store, store
from server.eeg.access import EegAccess
from server.eeg.recording import now_us
from server.policy import Action
from server.router import HandlerError, RequestContext
from server.security.crypto import Keyring
from server.store.db import Database
from server.store.jobs import JobWriter, write

#: Annotation log entries replayed by one resume at most (then ``caught_up`` false).
RESUME_MAX = 1000


def stream_of(channel: str) -> str:
    """The stream id of control channel ``eeg:<stream>``."""
    return channel.partition(":")[2]


def event_of(sid: str, seq: int, action: str, data: dict[str, Any]) -> bytes:
    """The msgpack event of one log entry."""
    ch = control_channel(sid)
    return encode_event(ch, seq, "annotation", {"action": action, "stream": sid, **data})


class AnnotationRecovery:
    """Where the channels read what followers of a control channel missed (the log)."""

    def __init__(self, db: Database, keys: Keyring) -> None:
        self.db, self.keys = db, keys

    async def read_range(self, channel: str, after: int, until: int) -> list[tuple[int, bytes]]:
        """Log entries ``after < seq < until`` as msgpack event frames."""
        sid, keys = stream_of(channel), self.keys
        rows = await self.db.run(
            lambda c: annotation_store.annotation_log(c, keys, sid, after, until), readonly=True
        )
        return [(seq, event_of(sid, seq, action, data)) for seq, action, data in rows]

    async def last_seqs(self, channels: Sequence[str]) -> dict[str, int]:
        """The last seq of each existing stream's log."""
        sids = [stream_of(c) for c in channels]
        seqs = await self.db.run(lambda c: annotation_store.ann_seqs(c, sids), readonly=True)
        return {control_channel(sid): seq for sid, seq in seqs.items()}


class Annotations:
    """The annotation requests of one node."""

    def __init__(
        self,
        db: Database,
        keys: Keyring,
        jobs: JobWriter,
        channels: ChannelService,
        access: EegAccess,
    ) -> None:
        self.db, self.keys, self.jobs, self.channels, self.access = db, keys, jobs, channels, access

    def _committed(self, sid: str, a: annotation_store.Annotation, action: str) -> None:
        self.channels.committed(
            control_channel(sid), [(a.seq, event_of(sid, a.seq, action, a.wire()))]
        )

    async def annotate(self, ctx: RequestContext, msg: EegAnnotate) -> dict[str, Any]:
        """Add an annotation (idempotent by ``client_id``); followers get it live."""
        await self.access.authorise(ctx, msg.stream, Action.EEG_ANNOTATE)
        a = annotation_store.Annotation(
            f"a-{secrets.token_hex(8)}",
            msg.onset,
            msg.duration,
            msg.text,
            msg.kind,
            ctx.principal.user_id,
            1,
            now_us(),
            msg.frequency_hz,
        )
        keys, sid = self.keys, msg.stream

        def add(c: Connection) -> tuple[tuple[annotation_store.Annotation, bool], list[AuditEvent]]:
            got, created = annotation_store.add_annotation(c, keys, sid, msg.client_id, a)
            if not created:
                return (got, False), []
            return (got, True), [
                self.access.event(ctx, AuditAction.CREATE, "eeg_annotation", got.id)
            ]

        try:
            got, created = await write(self.jobs, add)
        except store.NotFound as exc:
            raise HandlerError(ErrorCode.NOT_FOUND, "no such stream") from exc
        if created:
            self._committed(sid, got, "create")
        return {"id": got.id, "version": got.version, "seq": got.seq, "duplicate": not created}

    async def edit(self, ctx: RequestContext, msg: EegAnnotationEdit) -> dict[str, Any]:
        """Replace an annotation's fields (a new version)."""
        new = annotation_store.Annotation(
            msg.annotation,
            msg.onset,
            msg.duration,
            msg.text,
            msg.kind,
            ctx.principal.user_id,
            0,
            0,
            msg.frequency_hz,
        )
        a = await self._change(ctx, msg.stream, msg.annotation, new, AuditAction.UPDATE)
        return {"id": a.id, "version": a.version, "seq": a.seq}

    async def delete(self, ctx: RequestContext, msg: EegAnnotationDelete) -> dict[str, Any]:
        """Delete an annotation (its versions stay in the log)."""
        a = await self._change(ctx, msg.stream, msg.annotation, None, AuditAction.DELETE)
        return {"id": a.id, "version": a.version, "seq": a.seq}

    async def _change(
        self,
        ctx: RequestContext,
        sid: str,
        aid: str,
        new: annotation_store.Annotation | None,
        action: AuditAction,
    ) -> annotation_store.Annotation:
        await self.access.authorise(ctx, sid, Action.EEG_ANNOTATE)
        keys, actor, at = self.keys, ctx.principal.user_id, now_us()
        audit = [self.access.event(ctx, action, "eeg_annotation", aid)]

        def change(c: Connection) -> tuple[annotation_store.Annotation, list[AuditEvent]]:
            return annotation_store.change_annotation(c, keys, sid, aid, actor, at, new), audit

        try:
            a = await write(self.jobs, change)
        except store.NotFound as exc:
            raise HandlerError(ErrorCode.NOT_FOUND, "no such annotation") from exc
        self._committed(sid, a, "delete" if new is None else "update")
        return a

    async def list_annotations(self, ctx: RequestContext, msg: EegAnnotations) -> dict[str, Any]:
        """The live annotations and the log's position."""
        await self.access.authorise(ctx, msg.stream, Action.EEG_VIEW)
        listed, seq = await self.read(msg.stream)
        self.access.audit(ctx, AuditAction.READ, "eeg_stream", msg.stream)
        return {"annotations": listed, "ann_seq": seq}

    async def read(self, sid: str) -> tuple[list[dict[str, Any]], int]:
        """The live annotations (as on the wire) and the last seq of the log."""
        keys = self.keys

        def read(c: Connection) -> tuple[list[annotation_store.Annotation], int]:
            return annotation_store.live_annotations(c, keys, sid), annotation_store.ann_seqs(
                c, [sid]
            ).get(sid, 0)

        found, seq = await self.db.run(read, readonly=True)
        return [a.wire() for a in found], seq

    async def follow(self, ctx: RequestContext, sid: str, after: int | None) -> dict[str, Any]:
        """Follow ``sid``'s control channel: replay the log after ``after`` (None: send the
        live annotations instead), then live, with no gap and no duplicate."""
        ch = control_channel(sid)
        try:
            att = await self.channels.attach(ctx.peer, ch, buffering=True)
        except BrokerError as exc:
            raise HandlerError(ErrorCode.UNAVAILABLE, "broker unavailable") from exc
        keys = self.keys
        try:
            if after is None:
                listed, seq = await self.read(sid)
                att.go_live(seq)
                return {"annotations": listed, "ann_seq": seq}

            def log(c: Connection) -> tuple[int, list[tuple[int, str, dict[str, Any]]]]:
                current = annotation_store.ann_seqs(c, [sid]).get(sid, 0)
                return current, annotation_store.annotation_log(
                    c, keys, sid, after, after + RESUME_MAX + 1
                )

            current, rows = await self.db.run(log, readonly=True)
        except BaseException:
            self.channels.detach(ctx.peer, ch)
            raise
        if rows:
            send_events(ctx.peer, [(s, event_of(sid, s, act, d)) for s, act, d in rows])
        last = rows[-1][0] if rows else min(after, current)
        caught_up = len(rows) < RESUME_MAX
        if caught_up:
            att.go_live(last)
        else:
            self.channels.detach(ctx.peer, ch)
        return {"last_seq": last, "caught_up": caught_up}
