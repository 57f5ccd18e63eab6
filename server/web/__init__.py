"""The browser app: static files served by the hub at ``/`` (see docs/web.md).

The app is plain HTML, CSS and ES modules under ``server/web/static/`` (no
build step). :class:`BrowserApp` is a small ASGI app that serves them:

- ``GET /``: ``index.html``, with every ``{{static}}`` replaced by the
  versioned prefix ``/static/<version>`` (``Cache-Control: no-cache``, an
  ``ETag``, ``304`` on a matching ``If-None-Match``);
- ``GET /static/<version>/<path>``: a file of the current version,
  ``Cache-Control: public, max-age=31536000, immutable``. The version is a
  digest of every file, so any change gives new URLs (cache-busting), and a
  page's relative ES module imports stay within its version. A path of
  another version, or no such file: ``404``.

Every answer carries :data:`SECURITY_HEADERS`: a Content-Security-Policy with
no inline script, no inline style and ``default-src 'self'`` (the QR code is an
SVG shown from a ``blob:`` URL), ``nosniff``, no referrer, no framing. The
files are read once, when the app is built: a changed file needs a restart.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

#: Where the app's files live (installed as package data).
STATIC_DIR: Final = Path(__file__).resolve().parent / "static"

#: The Content-Security-Policy of every answer (docs/web.md explains each directive).
CSP: Final = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: Final = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}

IMMUTABLE: Final = "public, max-age=31536000, immutable"
_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
}


@dataclass(frozen=True)
class Asset:
    """One file, as served."""

    body: bytes
    media_type: str


def media_type(path: str) -> str:
    """The Content-Type of ``path`` (by extension)."""
    suffix = PurePosixPath(path).suffix.lower()
    return _TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def load_assets(root: Path) -> dict[str, Asset]:
    """Every file under ``root`` by its POSIX path relative to ``root``.

    Hidden files (a name starting with ``.``) are left out. Raises
    ``FileNotFoundError`` when ``root`` has no ``index.html``.
    """
    assets: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in rel.split("/")):
            continue
        assets[rel] = Asset(path.read_bytes(), media_type(rel))
    if "index.html" not in assets:
        raise FileNotFoundError(root / "index.html")
    return assets


def version_of(assets: dict[str, Asset]) -> str:
    """A digest of every file's path and content (12 hex digits)."""
    digest = hashlib.sha256()
    for rel, asset in sorted(assets.items()):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(asset.body).digest())
    return digest.hexdigest()[:12]


class BrowserApp:
    """ASGI app serving the browser app (see the module docstring)."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self.assets = load_assets(root)
        self.version = version_of(self.assets)
        self.prefix = f"/static/{self.version}"
        self.index = self.assets["index.html"].body.replace(b"{{static}}", self.prefix.encode())
        self.index_etag = '"' + hashlib.sha256(self.index).hexdigest()[:16] + '"'
        self.router = Router(
            routes=[
                Route("/", self._index, methods=["GET"]),
                Route("/index.html", self._index, methods=["GET"]),
                Route("/static/{version}/{path:path}", self._asset, methods=["GET"]),
            ],
            default=self._not_found,
            redirect_slashes=False,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.router(scope, receive, send)

    @staticmethod
    def _headers(cache: str) -> dict[str, str]:
        return {**SECURITY_HEADERS, "cache-control": cache}

    async def _index(self, request: Request) -> Response:
        headers = {**self._headers("no-cache"), "etag": self.index_etag}
        if request.headers.get("if-none-match") == self.index_etag:
            return Response(status_code=304, headers=headers)
        return Response(self.index, media_type=_TYPES[".html"], headers=headers)

    async def _asset(self, request: Request) -> Response:
        asset = self.assets.get(str(request.path_params["path"]))
        if request.path_params["version"] != self.version or asset is None:
            return self._missing()
        return Response(asset.body, media_type=asset.media_type, headers=self._headers(IMMUTABLE))

    def _missing(self) -> Response:
        return PlainTextResponse("not found\n", status_code=404, headers=self._headers("no-store"))

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._missing()(scope, receive, send)
