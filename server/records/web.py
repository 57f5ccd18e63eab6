"""What the records sidecar adds to ``/api/v1``: its endpoint table, its raw routes
and their OpenAPI entries (:func:`rest_part`).

The JSON operations are documented from their endpoint table
(:func:`server.accounts.openapi.build_openapi`, in the one document
:meth:`server.accounts.module.Accounts.app` serves), the raw ones (content
upload and download, the export) by :data:`RAW_OPERATIONS`.
"""

from __future__ import annotations

from typing import Any

from server.accounts.openapi import PREFIX
from server.accounts.web import RestPart, Shell
from server.records.routes import CONTENT_PATH, EXPORT_PATH, RecordsApi
from server.records.service import Records


def _binary(
    summary: str, op_id: str, media: str, param: bool, status: str = "200", upload: bool = False
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "security": [{"bearer": []}, {"cookie": [], "csrf": []}],
        "responses": {
            status: {
                "description": "success",
                "content": {media: {"schema": {"type": "string", "format": "binary"}}},
            },
            "401": {"description": "unauthenticated"},
            "403": {"description": "forbidden"},
            "404": {"description": "not_found"},
        },
    }
    if param:
        op["parameters"] = [
            {
                "name": "document_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": r"^[a-z]-[0-9a-f]{1,38}$"},
            }
        ]
    if upload:
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
        op["responses"]["413"] = {"description": "payload_too_large"}
        op["responses"]["415"] = {"description": "unsupported_media_type"}
        op["responses"][status] = {
            "description": "the document, at its new version",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/DocumentOut"}}
            },
        }
    return op


#: The raw operations in the OpenAPI document.
RAW_OPERATIONS: dict[str, dict[str, Any]] = {
    PREFIX + CONTENT_PATH: {
        "put": _binary(
            "Upload a document's content (a new version): PDF, PNG, JPEG, WebP, "
            "EDF or BDF, checked by its first bytes",
            "upload_content",
            "application/json",
            True,
            upload=True,
        ),
        "get": _binary(
            "Download a document's content (?version=N: an older one)",
            "download_content",
            "application/octet-stream",
            True,
        ),
    },
    PREFIX + EXPORT_PATH: {
        "get": _binary(
            "Everything about me (the right of access): a tar of export.json and files/",
            "export_me",
            "application/x-tar",
            False,
        ),
    },
}


def rest_part(records: Records, shell: Shell) -> RestPart:
    """What the records sidecar adds to ``/api/v1`` (:meth:`Accounts.app` builds it)."""
    api = RecordsApi(records, shell)
    return RestPart(api.endpoints(), api.raw_routes(), RAW_OPERATIONS)
