"""The records REST endpoints under ``/api/v1/records`` (thin: parse, call, reply).

JSON endpoints are :class:`server.accounts.web.Endpoint` rows served by the
accounts :class:`~server.accounts.web.Shell` (bearer or cookie + CSRF
sessions, bounded JSON bodies into msgspec Structs, stable error codes), so
one table gives the routes and their OpenAPI operations. Contents travel as
raw bodies on three routes of their own (upload, download, export), streamed
both ways, described by :data:`server.records.web.RAW_OPERATIONS` in the same
document (:func:`server.records.web.rest_part`;
:meth:`server.accounts.module.Accounts.app` composes ``/api/v1``).
See docs/records.md for every endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from server.accounts.errors import ApiError
from server.accounts.web import (
    PATH_PARAM,
    Context,
    Endpoint,
    Shell,
    error_response,
    raw_endpoint,
)
from server.logs import ROUTE_KEY
from server.records import reportstore as rs
from server.records import schemas as s
from server.records import store
from server.records.access import Who
from server.records.service import Records
from server.records.sniff import EXTENSIONS
from server.security.crypto import CryptoError

log = logging.getLogger(__name__)

CONTENT_PATH = "/records/documents/{document_id}/content"
EXPORT_PATH = "/records/me/export"


def who_of(ctx_caller: Any, source: str | None) -> Who:
    """The :class:`Who` of an authenticated accounts caller."""
    u = ctx_caller.user
    return Who(u.id, u.org_id, u.role, ctx_caller.session.id, source)


def document_out(d: store.Document, readable: bool = True) -> s.DocumentOut:
    """The API view of a document (free text only when ``readable``)."""
    text = (lambda v: v) if readable else (lambda v: None)
    return s.DocumentOut(
        d.id,
        d.patient_id,
        d.version,
        d.consultation_id,
        d.exam_id,
        d.media_type,
        d.size,
        text(d.title),
        text(d.filename),
        text(d.description),
        d.created_by,
        d.created_us,
        d.updated_us,
        d.area == "cold",
    )


def report_out(r: rs.Report, readable: bool = True) -> s.ReportOut:
    """The API view of a report version (title and text only when ``readable``)."""
    return s.ReportOut(
        r.id,
        r.patient_id,
        r.kind,
        r.status,
        r.version,
        r.latest_version,
        r.final_version,
        r.author_id,
        r.title if readable else None,
        r.text if readable else None,
        r.cites,
        r.signed_by,
        r.signed_us,
        r.consultation_id,
        r.exam_id,
        r.created_us,
        r.updated_us,
    )


class RecordsApi:
    """The handlers, bound to :class:`Records`."""

    def __init__(self, records: Records, shell: Shell) -> None:
        self.records = records
        self.shell = shell

    @staticmethod
    def _who(ctx: Context) -> Who:
        return who_of(ctx.me, ctx.source)

    # -- documents -----------------------------------------------------------------------
    async def create_document(self, ctx: Context) -> s.DocumentOut:
        b: s.DocumentCreate = ctx.body
        d = await self.records.documents.create(
            self._who(ctx),
            b.patient_id,
            b.title,
            b.filename,
            b.description,
            b.consultation_id,
            b.exam_id,
        )
        return document_out(d)

    async def get_document(self, ctx: Context) -> s.DocumentOut:
        d, readable = await self.records.documents.get(self._who(ctx), ctx.param("document_id"))
        return document_out(d, readable)

    async def update_document(self, ctx: Context) -> s.DocumentOut:
        b: s.DocumentUpdate = ctx.body
        d = await self.records.documents.update(
            self._who(ctx), ctx.param("document_id"), b.version, b.title, b.description
        )
        return document_out(d)

    async def delete_document(self, ctx: Context) -> s.Ok:
        await self.records.documents.delete(self._who(ctx), ctx.param("document_id"))
        return s.Ok()

    async def document_versions(self, ctx: Context) -> s.DocumentVersions:
        found = await self.records.documents.versions(self._who(ctx), ctx.param("document_id"))
        return s.DocumentVersions([msgspec.convert(v, s.DocumentVersion) for v in found])

    # -- reports -------------------------------------------------------------------------
    async def create_report(self, ctx: Context) -> s.ReportOut:
        b: s.ReportCreate = ctx.body
        r = await self.records.reports.create(
            self._who(ctx), b.patient_id, b.kind, b.title, b.text, b.consultation_id, b.exam_id
        )
        return report_out(r)

    async def get_report(self, ctx: Context) -> s.ReportOut:
        return report_out(await self.records.reports.get(self._who(ctx), ctx.param("report_id")))

    async def edit_report(self, ctx: Context) -> s.ReportOut:
        b: s.ReportEdit = ctx.body
        return report_out(
            await self.records.reports.edit(
                self._who(ctx), ctx.param("report_id"), b.version, b.title, b.text
            )
        )

    async def sign_report(self, ctx: Context) -> s.ReportOut:
        b: s.ReportSign = ctx.body
        return report_out(
            await self.records.reports.sign(self._who(ctx), ctx.param("report_id"), b.version)
        )

    async def amend_report(self, ctx: Context) -> s.ReportOut:
        b: s.ReportAmend = ctx.body
        return report_out(
            await self.records.reports.amend(
                self._who(ctx), ctx.param("report_id"), b.version, b.title, b.text
            )
        )

    async def delete_report(self, ctx: Context) -> s.Ok:
        await self.records.reports.delete(self._who(ctx), ctx.param("report_id"))
        return s.Ok()

    async def report_versions(self, ctx: Context) -> s.ReportVersions:
        found = await self.records.reports.versions(self._who(ctx), ctx.param("report_id"))
        return s.ReportVersions([msgspec.convert(v, s.ReportVersion) for v in found])

    # -- a patient's record, erasure ------------------------------------------------------
    async def patient_index(self, ctx: Context) -> s.RecordIndex:
        entries = await self.records.index(self._who(ctx), ctx.param("patient_id"))
        return s.RecordIndex(
            [document_out(e.document, e.readable) for e in entries if e.document],
            [report_out(e.report, e.readable) for e in entries if e.report],
        )

    async def erase_account(self, ctx: Context) -> s.ErasureOut:
        user_id = ctx.param("user_id")
        return s.ErasureOut(user_id, await self.records.erase(self._who(ctx), user_id))

    def endpoints(self) -> list[Endpoint]:
        """The JSON endpoints (paths below ``/api/v1``)."""
        E = Endpoint
        d, r = "/records/documents", "/records/reports"
        return [
            E(
                "POST",
                d,
                self.create_document,
                "Create a document (upload its content next)",
                s.DocumentOut,
                s.DocumentCreate,
                status=201,
            ),
            E(
                "GET",
                d + "/{document_id}",
                self.get_document,
                "A document's metadata",
                s.DocumentOut,
            ),
            E(
                "PATCH",
                d + "/{document_id}",
                self.update_document,
                "Change a document's title or description",
                s.DocumentOut,
                s.DocumentUpdate,
                errors=("conflict",),
            ),
            E(
                "DELETE",
                d + "/{document_id}",
                self.delete_document,
                "Delete a document (a tombstone)",
                s.Ok,
            ),
            E(
                "GET",
                d + "/{document_id}/versions",
                self.document_versions,
                "Every version of a document",
                s.DocumentVersions,
            ),
            E(
                "POST",
                r,
                self.create_report,
                "Start a draft report",
                s.ReportOut,
                s.ReportCreate,
                status=201,
            ),
            E("GET", r + "/{report_id}", self.get_report, "A report", s.ReportOut),
            E(
                "PATCH",
                r + "/{report_id}",
                self.edit_report,
                "Change a draft (its author)",
                s.ReportOut,
                s.ReportEdit,
                errors=("conflict",),
            ),
            E(
                "POST",
                r + "/{report_id}/sign",
                self.sign_report,
                "Sign a draft (its author)",
                s.ReportOut,
                s.ReportSign,
                errors=("conflict",),
            ),
            E(
                "POST",
                r + "/{report_id}/amend",
                self.amend_report,
                "Amend a signed report: a new draft version citing it",
                s.ReportOut,
                s.ReportAmend,
                errors=("conflict",),
            ),
            E(
                "DELETE",
                r + "/{report_id}",
                self.delete_report,
                "Delete a report never signed (its author)",
                s.Ok,
                errors=("conflict",),
            ),
            E(
                "GET",
                r + "/{report_id}/versions",
                self.report_versions,
                "Every version of a report, with its author",
                s.ReportVersions,
            ),
            E(
                "GET",
                "/records/patients/{patient_id}",
                self.patient_index,
                "What I may see of a patient's record",
                s.RecordIndex,
            ),
            E(
                "POST",
                "/records/accounts/{user_id}/erase",
                self.erase_account,
                "Pseudonymise an account (a deletion request; admins)",
                s.ErasureOut,
                errors=("conflict",),
            ),
        ]

    # -- raw routes: contents --------------------------------------------------------------
    async def _raw(
        self,
        request: Request,
        method: str,
        path: str,
        body: Callable[[Who], Awaitable[Response]],
    ) -> Response:
        request.scope[ROUTE_KEY] = request.scope.get("root_path", "") + path
        try:
            for value in request.path_params.values():
                if not store_id(str(value)):
                    raise ApiError("not_found")
            ep = _RAW_ENDPOINTS[(method, path)]
            caller = await self.shell.caller(request, ep)
            return await body(who_of(caller, self.shell.client_address(request)))
        except ApiError as exc:
            return error_response(exc)
        except CryptoError:
            log.error("records content failed its integrity check", extra={"path": path})
            return error_response(ApiError("internal"))
        except Exception as exc:
            log.error("records endpoint failed", extra={"path": path, "error": type(exc).__name__})
            return error_response(ApiError("internal"))

    async def upload(self, request: Request) -> Response:
        """``PUT .../content``: the raw body is the document's new content."""

        async def run(who: Who) -> Response:
            declared = request.headers.get("content-length")
            if declared is not None and not (declared.isascii() and declared.isdigit()):
                raise ApiError("bad_request", "invalid Content-Length")
            doc = await self.records.documents.upload(
                who,
                str(request.path_params["document_id"]),
                request.stream(),
                None if declared is None else int(declared),
            )
            return _json(document_out(doc))

        return await self._raw(request, "PUT", CONTENT_PATH, run)

    async def download(self, request: Request) -> Response:
        """``GET .../content[?version=N]``: the content, streamed."""

        async def run(who: Who) -> Response:
            raw = request.query_params.get("version")
            if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) < 10):
                raise ApiError("bad_request", "version is a positive integer")
            doc_id = str(request.path_params["document_id"])
            found = await self.records.documents.download(
                who, doc_id, None if raw is None else int(raw)
            )
            name = f"{doc_id}.{EXTENSIONS.get(found.media_type, 'bin')}"
            return StreamingResponse(
                _guarded(found.chunks, "document"),
                media_type=found.media_type,
                headers=_file_headers(name, found.size),
            )

        return await self._raw(request, "GET", CONTENT_PATH, run)

    async def export(self, request: Request) -> Response:
        """``GET /records/me/export``: my right-of-access bundle (tar), streamed."""

        async def run(who: Who) -> Response:
            stream = await self.records.export(who, who.user_id)
            return StreamingResponse(
                _guarded(stream, "export"),
                media_type="application/x-tar",
                headers=_file_headers(f"{who.user_id}.tar", None),
            )

        return await self._raw(request, "GET", EXPORT_PATH, run)

    def raw_routes(self) -> list[Route]:
        """The content routes (upload, download) and the export."""

        async def content(request: Request) -> Response:
            if request.method == "PUT":
                return await self.upload(request)
            if request.method in ("GET", "HEAD"):
                return await self.download(request)
            return error_response(ApiError("method_not_allowed"))

        return [
            Route(CONTENT_PATH, content, methods=["GET", "HEAD", "PUT", "POST", "DELETE"]),
            Route(EXPORT_PATH, self.export, methods=["GET"]),
        ]


def store_id(value: str) -> bool:
    """A path id as the API takes them."""
    return PATH_PARAM.fullmatch(value) is not None


_RAW_ENDPOINTS = {
    ("PUT", CONTENT_PATH): raw_endpoint("PUT", CONTENT_PATH),
    ("GET", CONTENT_PATH): raw_endpoint("GET", CONTENT_PATH),
    ("GET", EXPORT_PATH): raw_endpoint("GET", EXPORT_PATH),
}


def _json(reply: msgspec.Struct) -> Response:
    return Response(
        msgspec.json.encode(reply),
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )


def _file_headers(name: str, size: int | None) -> dict[str, str]:
    headers = {
        "cache-control": "no-store",
        "content-disposition": f'attachment; filename="{name}"',
        "x-content-type-options": "nosniff",
    }
    if size is not None:
        headers["content-length"] = str(size)
    return headers


async def _guarded(chunks: AsyncIterator[bytes], what: str) -> AsyncIterator[bytes]:
    """``chunks``, logging a failure once the answer has started: ``what`` is a kind
    ("document", "export"), never an id (the line's request id leads to the audit entry)."""
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as exc:
        log.error("records stream failed", extra={"target": what, "error": type(exc).__name__})
        raise
