"""The EEG viewer in the browser app (Chromium), fed by a real recorder through a real hub.

A technician's recorder (clients/eeg.py with the synthetic source of
media/eeg/synth.py, in real time) streams an exam; the interpreter opens it
from their home, sees the traces advance, switches montage and filters (the
channel labels become bipolar pairs), scrolls back and returns to live, and
annotates; the technician's exam page (another browser context) shows the
annotation as it is made (its viewer keeps drawing when the technician opens the
recording's own page and comes back: viewers on one hub socket share its watch),
then starts and stops a synthetic stream from the browser, which the interpreter
reads back as a finished recording. An interpreter of the organisation who is
not assigned is refused. The browser's binary frame code is checked against
protocol/vectors/eeg/frames.json.
Screenshots: docs/screenshots/eeg-viewer-{en,fr}.png, eeg-technician-{en,fr}.png.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from clients.eeg import Recorder, TicketAuth
from media.eeg.synth import SyntheticEeg
from tests.browser.test_client import static_base
from tests.browser.webtest import (
    ROOT,
    WAIT_MS,
    Browsers,
    Person,
    chromium,
    enrolled,
    new_org,
    open_app,
    shoot,
    sign_in,
    web_hub,
)

pytestmark = pytest.mark.slow  # Chromium, a hub and a real-time recorder

FRAMES = ROOT / "protocol" / "vectors" / "eeg" / "frames.json"
FRAMES_CHECK = (Path(__file__).parent / "eeg_frames_check.js").read_text()


async def signed_in(b: Browsers, person: Person, who: str) -> Page:
    page = await b.page(who)
    await open_app(page)
    await sign_in(page, person)
    return page


@contextlib.asynccontextmanager
async def recording(url: str, http: str, token: str, exam: str) -> AsyncIterator[Recorder]:
    """A recorder streaming 21 channels at 256 Hz in real time (5 s at once first)."""
    source = SyntheticEeg(21, 256, "int16", seed=7)
    rec = Recorder(url, TicketAuth(http, token), exam, source.meta)
    await rec.start()
    await rec.write(source.read(5 * 256))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        started, sent = loop.time(), 0
        while True:
            await rec.write(source.read(32))
            sent += 32
            await asyncio.sleep(max(0.0, started + sent / 256 - loop.time()))

    task = asyncio.get_running_loop().create_task(run())
    try:
        yield rec
    finally:
        if task.done():  # the recorder stopped on its own: say why (the traces stalled)
            task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await rec.stop()


async def drawn(page: Page) -> int:
    return int(await page.locator(".eeg-drawn").get_attribute("data-samples") or 0)


async def drawn_over(page: Page, n: int) -> None:
    """Wait until more than ``n`` samples are drawn (the counter the viewer keeps in the DOM)."""
    await page.wait_for_function(
        "n => Number(document.querySelector('.eeg-drawn')?.dataset.samples) > n",
        arg=n,
        timeout=WAIT_MS,
    )


async def advances(page: Page) -> None:
    """More samples get drawn (the counter grows) and the canvas pixels change."""
    before_px = await page.locator("canvas.eeg-canvas").evaluate("c => c.toDataURL()")
    before_n = await drawn(page)
    await page.wait_for_function(
        """([n, px]) => Number(document.querySelector('.eeg-drawn').dataset.samples) > n
            && document.querySelector('canvas.eeg-canvas').toDataURL() !== px""",
        arg=[before_n + 64, before_px],
        polling=200,
        timeout=WAIT_MS,
    )


async def test_interpreter_watches_filters_and_annotates_live(tmp_path: Path) -> None:
    async with web_hub(tmp_path / "hub") as hub, chromium(hub.http) as b:
        org = await new_org(hub, "Clinique des Lilas")
        admin = await enrolled(hub, org, "admin", "Alice Admin", "alice@lilas.example")
        tech = await enrolled(hub, org, "technician", "Théo Tech", "theo@lilas.example")
        interp = await enrolled(hub, org, "interpreter", "Dr Inès Roux", "ines@lilas.example")
        doc = await enrolled(hub, org, "practitioner", "Dr Claire Martin", "claire@lilas.example")
        pat = await enrolled(hub, org, "patient", "Paul Durand", "paul@lilas.example")
        stranger = await enrolled(hub, org, "interpreter", "Dr Sam Autre", "sam@lilas.example")
        async with httpx.AsyncClient(base_url=hub.api) as http:
            r = await http.post(
                "/eeg/exams",
                json={
                    "patient_id": pat.user_id,
                    "ordering_id": doc.user_id,
                    "technician_id": tech.user_id,
                    "interpreters": [interp.user_id],
                    "indication": "Absences since January",
                },
                headers={"authorization": f"Bearer {admin.token}"},
            )
            assert r.status_code == 201, r.text
            exam = r.json()["id"]

        async with recording(hub.url, hub.http, tech.token, exam) as rec:
            sid = rec.sid
            assert sid is not None
            # -- the interpreter's home lists the exam and its live recording --
            ip = await signed_in(b, interp, "interpreter")
            card = ip.locator("section", has=ip.get_by_role("heading", name="My EEG exams"))
            await expect(card.locator(f"li[data-stream='{sid}']")).to_contain_text(
                "Live", timeout=WAIT_MS
            )
            await card.get_by_role("link", name=sid).click()
            await expect(ip.locator(".eeg-status")).to_contain_text("Live", timeout=WAIT_MS)
            labels = ip.locator(".eeg-labels li")
            await expect(labels).to_have_count(21)
            await expect(labels.first).to_have_text("Fp1")
            await advances(ip)

            # -- montage and filters: bipolar pairs, and the traces still advance --
            await ip.get_by_label("Montage").select_option("longitudinal")
            await expect(labels.first).to_have_text("Fp1-F7")
            await expect(labels).to_have_count(18)
            await expect(ip.locator(".eeg-labels")).to_contain_text("Cz-Pz")
            await ip.get_by_label("Montage").select_option("transverse")
            await expect(labels.first).to_have_text("Fp1-Fp2")
            await ip.get_by_label("Montage").select_option("longitudinal")
            await ip.get_by_label("High-pass").select_option("1")
            await ip.get_by_label("Notch").select_option("50")
            await ip.get_by_label("Sensitivity").select_option("10")
            await advances(ip)

            # -- scrolling back while live goes on, then back to live (once past a page) --
            await ip.wait_for_function(
                "() => Number(document.querySelector('.eeg-status').dataset.end) > 11 * 256",
                timeout=WAIT_MS,
            )
            await ip.get_by_role("button", name="◀ Previous page").click()
            await expect(ip.locator(".eeg-status")).to_contain_text("Reviewing")
            await ip.get_by_role("button", name="Back to live").click()
            await expect(ip.locator(".eeg-status")).to_contain_text("Live")
            await advances(ip)

            # -- the technician's exam page watches the same stream --
            tp = await signed_in(b, tech, "technician")
            await tp.goto(f"/#/eeg/exam/{exam}")
            await expect(tp.locator(f".eeg-viewer[data-stream='{sid}']")).to_be_visible(
                timeout=WAIT_MS
            )
            await expect(tp.locator(".eeg-status")).to_contain_text("Live", timeout=WAIT_MS)
            await advances(tp)
            # the recording's own page: its viewer opens while the exam page's one closes on
            # the same hub socket (the closing one must not end the new one's watch)
            await tp.locator(f".eeg-streams li[data-stream='{sid}'] a").click()
            await expect(tp.locator("#eeg-title")).to_contain_text(sid)
            await expect(tp.locator(".eeg-status")).to_contain_text("Live", timeout=WAIT_MS)
            await advances(tp)
            await advances(tp)
            await tp.go_back()
            await expect(tp.locator(f".eeg-viewer[data-stream='{sid}']")).to_be_visible(
                timeout=WAIT_MS
            )
            await advances(tp)

            # -- an annotation by a click on the traces; the technician sees it live --
            box = await ip.locator("canvas.eeg-canvas").bounding_box()
            assert box is not None
            await ip.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
            await expect(ip.locator(".eeg-where")).to_contain_text("at ")
            await ip.get_by_label("Kind").select_option("eyes_closed")
            await ip.get_by_label("Text").fill("Posterior alpha blocks on eye opening")
            await ip.get_by_role("button", name="Add an annotation").click()
            note = tp.locator(".eeg-notes-list li", has_text="Posterior alpha blocks")
            await expect(note).to_be_visible(timeout=WAIT_MS)
            await expect(note).to_contain_text("Eyes closed")
            await expect(note).to_contain_text("Dr Inès Roux")
            # edited by the technician: the interpreter sees the new text
            await note.get_by_role("button", name="Edit").click()
            await tp.get_by_label("Text").fill("Alpha blocks on eye opening (confirmed)")
            await tp.get_by_role("button", name="Save the annotation").click()
            await expect(ip.locator(".eeg-notes-list")).to_contain_text(
                "(confirmed)", timeout=WAIT_MS
            )
            await shoot(ip, "eeg-viewer")

            # -- an interpreter who is not assigned is refused --
            sp = await signed_in(b, stranger, "stranger")
            await sp.goto(f"/#/eeg/{sid}")
            await expect(sp.get_by_role("alert")).to_contain_text(
                "You may not watch this recording", timeout=WAIT_MS
            )
            await expect(sp.locator("canvas.eeg-canvas")).to_have_count(0)

            # -- the technician streams from the browser, then stops; read back finished --
            await tp.get_by_role(
                "button", name="Start a synthetic stream from this browser"
            ).click()
            status = tp.locator(".eeg-recorder [role=status]")
            await expect(status).to_contain_text("This browser is streaming", timeout=WAIT_MS)
            mine = re.search(r"t-[0-9a-f]{8}", await status.inner_text())
            assert mine is not None
            browser_sid = mine.group(0)
            await expect(tp.locator(f".eeg-viewer[data-stream='{browser_sid}']")).to_be_visible(
                timeout=WAIT_MS
            )
            await advances(tp)
            await tp.wait_for_function(  # 2 s stored (acknowledged by the hub)
                "() => Number(document.querySelector('.eeg-stored')?.dataset.acked) >= 512",
                timeout=WAIT_MS,
            )
            await shoot(tp, "eeg-technician")
            await tp.get_by_role("button", name="Stop the recording").click()
            await expect(
                tp.locator(f".eeg-streams li[data-stream='{browser_sid}']")
            ).to_contain_text("Finished", timeout=WAIT_MS)
            await ip.goto(f"/#/eeg/{browser_sid}")
            await expect(ip.locator(".eeg-status")).to_contain_text(
                "Finished recording", timeout=WAIT_MS
            )
            await drawn_over(ip, 500)  # the finished recording's traces, read back


async def test_browser_eeg_frames_against_vectors(tmp_path: Path) -> None:
    vectors = json.loads(FRAMES.read_text())
    async with web_hub(tmp_path / "hub") as hub, chromium(hub.http) as b:
        page = await b.page("frames")
        await open_app(page)
        base = await static_base(page)
        failures = await page.evaluate(
            FRAMES_CHECK,
            {"base": base, "vectors": vectors},
        )
        assert failures == []
