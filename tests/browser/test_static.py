"""How the hub serves the browser app: at /, cache-busted, under a strict CSP."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from server.web import CSP, BrowserApp, version_of
from tests.browser.webtest import web_hub


async def test_app_is_served_at_root_with_a_strict_policy(tmp_path: Path) -> None:
    async with web_hub(tmp_path / "hub") as hub, httpx.AsyncClient(base_url=hub.http) as http:
        index = await http.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert index.headers["cache-control"] == "no-cache"
        csp = index.headers["content-security-policy"]
        assert csp == CSP
        directives = dict(d.split(" ", 1) for d in csp.split("; "))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert "unsafe" not in csp
        assert index.headers["x-content-type-options"] == "nosniff"
        assert index.headers["x-frame-options"] == "DENY"
        # no inline script or style in the page itself
        assert not re.search(r"<script(?![^>]*\bsrc=)", index.text)
        assert "<style" not in index.text
        assert "style=" not in index.text

        # every asset URL carries the version; assets of that version are immutable
        urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', index.text)
        assert urls, index.text
        version = hub_version(index.text)
        for url in urls:
            r = await http.get(url)
            assert r.status_code == 200, url
            assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert r.headers["content-security-policy"] == CSP
        js = await http.get(f"/static/{version}/js/medhub.js")
        assert js.headers["content-type"].startswith("text/javascript")

        # another version, a missing file, a path outside the folder: 404
        assert (await http.get("/static/000000000000/js/medhub.js")).status_code == 404
        assert (await http.get(f"/static/{version}/js/nope.js")).status_code == 404
        assert (await http.get(f"/static/{version}/../__init__.py")).status_code == 404
        assert (await http.get("/nothing-here")).status_code == 404

        # a cached page is revalidated, not downloaded again
        again = await http.get("/", headers={"if-none-match": index.headers["etag"]})
        assert again.status_code == 304
        # the rest of the hub is where it was
        assert (await http.get("/healthz")).text == "ok\n"
        assert (await http.get("/api/v1/openapi.json")).status_code == 200


def hub_version(html: str) -> str:
    found = re.search(r"/static/([0-9a-f]{12})/", html)
    assert found, html
    return found.group(1)


def test_version_changes_with_any_file(tmp_path: Path) -> None:
    (tmp_path / "js").mkdir()
    (tmp_path / "index.html").write_text('<script type="module" src="{{static}}/js/a.js">')
    (tmp_path / "js" / "a.js").write_text("export const a = 1;\n")
    first = BrowserApp(tmp_path)
    assert first.index == f'<script type="module" src="/static/{first.version}/js/a.js">'.encode()
    (tmp_path / "js" / "a.js").write_text("export const a = 2;\n")
    second = BrowserApp(tmp_path)
    assert second.version != first.version
    assert version_of(second.assets) == second.version
