"""The OpenAPI 3.1 document of the accounts API, built from the endpoint table.

Schemas come from the same msgspec Structs that validate requests
(``msgspec.json.schema_components``), so the document matches the code.
Every operation lists the statuses of every error code it can answer.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from server.accounts.errors import CODES
from server.accounts.schemas import ErrorBody
from server.accounts.web import Endpoint

PREFIX = "/api/v1"
_PARAM = re.compile(r"{(\w+)}")
REF = "#/components/schemas/{name}"


def build_openapi(endpoints: list[Endpoint], *, version: str = "1.0.0") -> dict[str, Any]:
    """The OpenAPI 3.1 document (a JSON-ready dict) for ``endpoints``."""
    types: list[Any] = [ErrorBody]
    for ep in endpoints:
        types.append(ep.reply)
        if ep.body is not None:
            types.append(ep.body)
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(types, refs, strict=True))
    error_ref = schema_of[ErrorBody]
    statuses = sorted({status for status, _ in CODES.values()})
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        op: dict[str, Any] = {
            "operationId": ep.operation_id,
            "summary": ep.summary,
            "responses": {
                str(ep.status): {
                    "description": "success",
                    "content": {"application/json": {"schema": schema_of[ep.reply]}},
                },
                **{
                    str(s): {
                        "description": ", ".join(c for c, (st, _) in CODES.items() if st == s),
                        "content": {"application/json": {"schema": error_ref}},
                    }
                    for s in statuses
                },
            },
        }
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": r"^[a-z]-[0-9a-f]{1,38}$"},
            }
            for name in _PARAM.findall(ep.path)
        ] + [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string", "pattern": r"^[a-z]-[0-9a-f]{1,38}$"},
            }
            for name in ep.query
        ]
        if ep.auth != "public":
            op["security"] = [{"bearer": []}, {"cookie": [], "csrf": []}]
        if params:
            op["parameters"] = params
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[ep.body]}},
            }
        paths.setdefault(PREFIX + ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "medhub accounts",
            "version": version,
            "description": "Organisations, users, roles, delegation, login (password + TOTP), "
            "sessions. Errors are {error: {code, message}} with stable codes.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "__Host-medhub-session"},
                "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token"},
            },
        },
    }
