"""The browser client library (server/web/static/js/) checked in Chromium.

- It decodes and encodes every golden frame of protocol/vectors/ (both codecs),
  and refuses every invalid client frame with the code and id the hub answers.
- Its table of client messages agrees with protocol/ (types, frame limits,
  fields, required fields), so it never sends what the hub would refuse.
- English and French have the same keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
from playwright.async_api import Page

from protocol.messages import CLIENT_TYPES, Request
from tests.browser.webtest import ROOT, chromium, open_app, web_hub

VECTORS = ROOT / "protocol" / "vectors"
CHECK = (Path(__file__).parent / "vectors_check.js").read_text()


async def static_base(page: Page) -> str:
    """The versioned static prefix the page was served with."""
    src = await page.locator("script[type=module]").get_attribute("src")
    assert src is not None
    return src.rsplit("/js/", 1)[0]


def python_table() -> dict[str, dict[str, Any]]:
    """protocol/'s client messages: frame limit, fields, required fields (tag and id aside)."""
    out = {}
    for name, cls in CLIENT_TYPES.items():
        fields = {f.name: f.required for f in msgspec.structs.fields(cls) if f.name != "id"}
        out[name] = {
            "max": cls.max_bytes,
            "request": issubclass(cls, Request),
            "fields": sorted(fields),
            "req": sorted(f for f, required in fields.items() if required),
        }
    return out


async def test_browser_client_against_vectors_and_protocol(tmp_path: Path) -> None:
    files = {p.name: json.loads(p.read_text()) for p in sorted(VECTORS.glob("*.json"))}
    assert set(files) >= {"core.json", "invalid.json"}
    async with web_hub(tmp_path / "hub") as hub, chromium(hub.http) as b:
        page = await b.page("client")
        await open_app(page)
        base = await static_base(page)

        result = await page.evaluate(CHECK, {"base": base, "files": files})
        assert result["failures"] == []
        frames = sum(
            (c["json"] is not None) + (c["msgpack_hex"] is not None)
            for cases in files.values()
            for c in cases
        )
        counts = result["counts"]
        ok_frames = sum(
            (c["json"] is not None) + (c["msgpack_hex"] is not None)
            for cases in files.values()
            for c in cases
            if c["expect"] == "ok"
        )
        assert counts["decoded"] == counts["encoded"] == ok_frames
        assert counts["decoded"] + counts["refused"] == frames

        js_table = await page.evaluate(
            """async (base) => {
                const { CLIENT_TYPES } = await import(`${base}/js/codec.js`);
                return Object.fromEntries(Object.entries(CLIENT_TYPES).map(([name, s]) => [name, {
                    max: s.max, request: s.request,
                    fields: Object.keys(s.fields).sort(), req: [...s.req].sort(),
                }]));
            }""",
            base,
        )
        py_table = python_table()
        # Every type the browser sends is one the hub knows, with the same rules;
        # types added to protocol/ later are simply not sent by this client.
        assert set(js_table) <= set(py_table)
        for name, rules in js_table.items():
            assert rules == py_table[name], name
        assert {"hello", "ping", "heartbeat", "presence.subscribe", "chat.send"} <= set(js_table)

        locales = await page.evaluate(
            """async (base) => {
                const en = (await import(`${base}/js/locales/en.js`)).default;
                const fr = (await import(`${base}/js/locales/fr.js`)).default;
                const kind = (v) => (typeof v === "object" ? Object.keys(v).sort().join() : "text");
                const shape = (d) => Object.fromEntries(
                    Object.entries(d).map(([k, v]) => [k, kind(v)]));
                return { en: shape(en), fr: shape(fr) };
            }""",
            base,
        )
        assert locales["en"] == locales["fr"]
