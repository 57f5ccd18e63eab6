"""EEG exams over REST (``/api/v1/eeg/...``), in the accounts API's OpenAPI document.

The endpoints are :class:`server.accounts.web.Endpoint` rows served by the
accounts :class:`~server.accounts.web.Shell` (bearer or cookie + CSRF
sessions, bounded JSON bodies into msgspec Structs, stable error codes), so
one table gives the routes and the OpenAPI operations. :func:`rest_part` is
what the capability adds to ``/api/v1`` (``Eeg.rest``): the table, and the
export as a raw route (a streamed file) with its OpenAPI operation.

| method | path | who |
|---|---|---|
| POST | /eeg/exams | an admin, or the ordering practitioner caring for the patient |
| GET | /eeg/exams | the exams I am assigned to (an admin: all of the organisation) |
| GET | /eeg/exams/{exam_id} | the exam's people and its admins |
| PATCH | /eeg/exams/{exam_id} | as POST; ``version`` must be the current one (else ``conflict``) |
| GET | /eeg/exams/{exam_id}/versions | as GET |
| GET | /eeg/streams/{stream_id}/edf | who may watch the stream: the EDF+/BDF+ file |

Every change writes a version row and its audit entry in one transaction
(the node's write sequence); reads, exports and refusals are audited.
Removing someone from an exam stops their sockets following its streams
(an inbox notice on every node).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy.engine import Connection
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from server import policy
from server.accounts.errors import ApiError
from server.accounts.openapi import PREFIX
from server.accounts.service import Caller
from server.accounts.web import (
    Context,
    Endpoint,
    RestPart,
    Shell,
    error_response,
    raw_endpoint,
)
from server.audit.events import Action as AuditAction
from server.audit.events import AuditEvent
from server.audit.events import Result as AuditResult
from server.capability import Node
from server.eeg import store
from server.eeg.access import EegAccess
from server.eeg.export import export_stream
from server.eeg.schemas import (
    LIST_MAX,
    ExamCreate,
    ExamList,
    ExamOut,
    ExamUpdate,
    ExamVersion,
    ExamVersions,
    StreamOut,
)
from server.policy import Role
from server.store.ids import new_id
from server.store.jobs import write


def _out(row: store.ExamRow, streams: list[store.StreamRow]) -> ExamOut:
    p = row.people
    return ExamOut(
        p.id,
        p.org_id,
        p.patient_id,
        p.ordering_id,
        p.technician_id,
        sorted(p.interpreters),
        row.state,
        row.indication,
        row.version,
        row.created_us,
        row.updated_us,
        [
            StreamOut(
                s.id,
                s.state,
                s.rate,
                s.format,
                s.channels,
                s.durable_end,
                s.created_us,
                s.closed_us,
            )
            for s in streams
        ],
    )


def subject_of(me: Caller) -> policy.Subject:
    """The caller as a policy subject."""
    return policy.Subject(me.user.id, me.user.org_id, me.user.role)


class ExamApi:
    """The exams endpoints, over the node's store, facts and write sequence."""

    def __init__(
        self, node: Node, access: EegAccess, changed: Callable[[str, set[str]], None]
    ) -> None:
        self.db, self.keys, self.facts, self.jobs = (
            node.database,
            node.keys,
            node.facts,
            node.writer,
        )
        self.recorder, self.access, self.changed = node.audit, access, changed
        self.export_dir = os.path.join(node.settings.data_dir, "exports")

    def _event(
        self,
        me: Caller,
        source: str | None,
        action: AuditAction,
        target_type: str,
        target: str,
        reason: str | None = None,
        result: AuditResult = AuditResult.OK,
    ) -> AuditEvent:
        u = me.user
        return AuditEvent(
            action=action,
            result=result,
            actor=u.id,
            role=u.role,
            org=u.org_id,
            target_type=target_type,
            target_id=target,
            reason=reason,
            source=source,
            request_id=me.session.id,
        )

    def _deny(
        self, me: Caller, source: str | None, target_type: str, target: str, reason: str
    ) -> ApiError:
        self.recorder.record(
            self._event(
                me, source, AuditAction.DENIED, target_type, target, reason, AuditResult.DENIED
            )
        )
        return ApiError("not_found" if reason in ("other_org", "not_found") else "forbidden")

    async def _people(self, org: str, exam: policy.Exam) -> None:
        """Raise ``bad_request`` unless every person is an active user of ``org`` with the role
        the exam needs."""
        found = await self.facts.users(
            {exam.patient_id, exam.ordering_id, exam.technician_id, *exam.interpreters}
        )
        need = [
            (exam.patient_id, {Role.PATIENT}),
            (exam.ordering_id, {Role.PRACTITIONER}),
            (exam.technician_id, {Role.TECHNICIAN}),
        ]
        need += [(i, set(policy.EEG_INTERPRETER_ROLES)) for i in exam.interpreters]
        for uid, roles in need:
            f = found.get(uid)
            if f is None or f.org_id != org:
                raise ApiError("bad_request", f"{uid} is not an active user of the organisation")
            if f.role not in roles:
                raise ApiError("bad_request", f"{uid} does not have the role this place needs")

    async def _manage(self, ctx: Context, exam: policy.Exam) -> None:
        rels = await self.facts.relationships_of([exam.patient_id])
        decision = policy.eeg_exam_manage(subject_of(ctx.me), exam, policy.Facts(rels))
        if not decision:
            raise self._deny(ctx.me, ctx.source, "eeg_exam", exam.id, decision.reason)

    async def _readable(self, ctx: Context, exam_id: str) -> store.ExamRow:
        keys = self.keys
        row = await self.db.run(lambda c: store.get_exam(c, keys, exam_id), readonly=True)
        if row is None:
            raise self._deny(ctx.me, ctx.source, "eeg_exam", exam_id, "not_found")
        decision = policy.eeg_exam_read(subject_of(ctx.me), row.people)
        if not decision:
            raise self._deny(ctx.me, ctx.source, "eeg_exam", exam_id, decision.reason)
        return row

    # -- handlers -----------------------------------------------------------------------
    async def create_exam(self, ctx: Context) -> ExamOut:
        b: ExamCreate = ctx.body
        me = ctx.me
        ordering = b.ordering_id or me.user.id
        now = int(time.time() * 1e6)
        people = policy.Exam(
            new_id("e"),
            me.user.org_id,
            b.patient_id,
            ordering,
            b.technician_id,
            frozenset(b.interpreters),
        )
        await self._manage(ctx, people)
        await self._people(me.user.org_id, people)
        row = store.ExamRow(people, "planned", b.indication, 1, now, now)
        keys, event = (
            self.keys,
            self._event(me, ctx.source, AuditAction.CREATE, "eeg_exam", people.id),
        )

        def create(c: Connection) -> tuple[None, list[AuditEvent]]:
            store.create_exam(c, keys, row, me.user.id)
            return None, [event]

        await write(self.jobs, create)
        return _out(row, [])

    async def list_exams(self, ctx: Context) -> ExamList:
        me, keys = ctx.me, self.keys
        everyone = me.user.role == Role.ADMIN

        def read(c: Connection) -> tuple[list[store.ExamRow], dict[str, list[store.StreamRow]]]:
            rows = store.exams_for(
                c, keys, me.user.id, me.user.org_id, everyone=everyone, limit=LIST_MAX
            )
            return rows, store.streams_of(c, [r.id for r in rows])

        if me.user.role == Role.SUPERADMIN:
            return ExamList([])
        rows, streams = await self.db.run(read, readonly=True)
        self.recorder.record(
            self._event(me, ctx.source, AuditAction.READ, "eeg_exam_list", me.user.id)
        )
        return ExamList([_out(r, streams.get(r.id, [])) for r in rows])

    async def get_exam(self, ctx: Context) -> ExamOut:
        row = await self._readable(ctx, ctx.param("exam_id"))
        streams = await self.db.run(lambda c: store.streams_of(c, [row.id]), readonly=True)
        self.recorder.record(self._event(ctx.me, ctx.source, AuditAction.READ, "eeg_exam", row.id))
        return _out(row, streams.get(row.id, []))

    async def update_exam(self, ctx: Context) -> ExamOut:
        b: ExamUpdate = ctx.body
        me, keys = ctx.me, self.keys
        old = await self._readable(ctx, ctx.param("exam_id"))
        p = old.people
        people = policy.Exam(
            p.id,
            p.org_id,
            p.patient_id,
            p.ordering_id,
            b.technician_id or p.technician_id,
            frozenset(b.interpreters) if b.interpreters is not None else p.interpreters,
        )
        await self._manage(ctx, p)
        await self._people(p.org_id, people)
        now = int(time.time() * 1e6)
        new = store.ExamRow(
            people,
            b.state or old.state,
            old.indication if b.indication is None else b.indication,
            old.version,
            old.created_us,
            now,
        )
        event = self._event(me, ctx.source, AuditAction.UPDATE, "eeg_exam", p.id)

        def update(c: Connection) -> tuple[store.ExamRow, list[AuditEvent]]:
            return store.update_exam(c, keys, new, b.version, me.user.id), [event]

        try:
            row = await write(self.jobs, update)
        except store.Conflict as exc:
            raise ApiError("conflict", "the exam changed meanwhile; reload it") from exc
        self.changed(p.id, set(p.members() - people.members()))
        streams = await self.db.run(lambda c: store.streams_of(c, [p.id]), readonly=True)
        return _out(row, streams.get(p.id, []))

    async def exam_versions(self, ctx: Context) -> ExamVersions:
        row = await self._readable(ctx, ctx.param("exam_id"))
        keys = self.keys
        found = await self.db.run(lambda c: store.exam_versions(c, keys, row.id), readonly=True)
        self.recorder.record(self._event(ctx.me, ctx.source, AuditAction.READ, "eeg_exam", row.id))
        return ExamVersions([msgspec.convert(v, ExamVersion) for v in found])

    def endpoints(self) -> list[Endpoint]:
        """The exams table (paths below ``/api/v1``)."""
        E = Endpoint
        return [
            E(
                "POST",
                "/eeg/exams",
                self.create_exam,
                "Create an EEG exam",
                ExamOut,
                ExamCreate,
                status=201,
            ),
            E("GET", "/eeg/exams", self.list_exams, "EEG exams I am assigned to", ExamList),
            E(
                "GET",
                "/eeg/exams/{exam_id}",
                self.get_exam,
                "One EEG exam and its recordings",
                ExamOut,
            ),
            E(
                "PATCH",
                "/eeg/exams/{exam_id}",
                self.update_exam,
                "Change an exam's technician, interpreters, state or indication",
                ExamOut,
                ExamUpdate,
                errors=("conflict",),
            ),
            E(
                "GET",
                "/eeg/exams/{exam_id}/versions",
                self.exam_versions,
                "Every version of an exam",
                ExamVersions,
            ),
        ]

    # -- export -------------------------------------------------------------------------
    async def export(self, request: Request, shell: Shell) -> Response:
        """``GET /eeg/streams/{stream_id}/edf``: the recording as EDF+ (or BDF+)."""
        sid = str(request.path_params["stream_id"])
        try:
            me = await shell.caller(request, _EXPORT_ENDPOINT)
            assert me is not None  # a session endpoint
            source = shell.client_address(request)
            keys = self.keys
            row = await self.db.run(lambda c: store.get_stream(c, sid), readonly=True)
            exam = (
                None
                if row is None
                else await self.db.run(
                    lambda c: store.get_exam(c, keys, row.exam_id), readonly=True
                )
            )
            if row is None or exam is None:
                raise self._deny(me, source, "eeg_stream", sid, "not_found")
            decision = policy.eeg_access(subject_of(me), policy.Action.EEG_VIEW, exam.people)
            if not decision:
                raise self._deny(me, source, "eeg_stream", sid, decision.reason)
            os.makedirs(self.export_dir, mode=0o700, exist_ok=True)
            fd, path = tempfile.mkstemp(suffix=".edf", dir=self.export_dir)
            os.close(fd)
            try:
                done = await export_stream(self.db, keys, sid, path)
            except BaseException:
                os.unlink(path)
                raise
            self.recorder.record(self._event(me, source, AuditAction.EXPORT, "eeg_stream", sid))
        except ApiError as exc:
            return error_response(exc)
        name = f"{sid}.{'bdf' if done.bdf else 'edf'}"
        return FileResponse(
            path,
            media_type="application/octet-stream",
            filename=name,
            background=BackgroundTask(os.unlink, path),
            headers={"cache-control": "no-store"},
        )


EXPORT_PATH = "/eeg/streams/{stream_id}/edf"
_EXPORT_ENDPOINT = raw_endpoint("GET", EXPORT_PATH)


def _export_operation() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "export_stream",
            "summary": "A recording as EDF+ (BDF+ when 16 bits cannot hold its range)",
            "parameters": [
                {
                    "name": "stream_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": r"^t-[0-9a-f]{8}$"},
                }
            ],
            "security": [{"bearer": []}, {"cookie": []}],
            "responses": {
                "200": {
                    "description": "the file",
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                "401": {"description": "unauthenticated"},
                "403": {"description": "forbidden"},
                "404": {"description": "not_found"},
            },
        }
    }


def rest_part(api: ExamApi, shell: Shell) -> RestPart:
    """What EEG adds to ``/api/v1``: the exams table and the EDF+ export (streamed)."""

    async def export(request: Request) -> Response:
        return await api.export(request, shell)

    return RestPart(
        api.endpoints(),
        [Route(EXPORT_PATH, export, methods=["GET"])],
        {PREFIX + EXPORT_PATH: _export_operation()},
    )


__all__ = ["ExamApi", "error_response", "rest_part"]
