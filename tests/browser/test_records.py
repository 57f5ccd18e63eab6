"""Medical records in the browser app (Chromium): documents, reports, who sees what, erasure.

A practitioner uploads a PDF to their patient's record (a file of another type
first, refused in words) and writes, edits and signs a report; the patient
sees the signed report, downloads the document (the same bytes) and exports
their data (a tar holding export.json); an amendment stays invisible to the
patient until signed; an unrelated practitioner and a practitioner of another
organisation get "not found"; a secretary delegated only consultations sees the
index with its titles hidden and is refused the report. An admin erases an
account after typing its name. Screenshots (English and French) go to
docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from server import policy
from tests.browser.webtest import (
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

pytestmark = pytest.mark.slow  # Chromium and a hub per test: several seconds each

PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n% EEG 2024-03-12, 21 channels\n%%EOF\n"
SIGNED_TEXT = "Generalised 3 Hz spike-and-wave discharges. Start ethosuximide."
AMENDED_TEXT = "Generalised 3 Hz spike-and-wave discharges. Start valproate instead."


async def signed_in(b: Browsers, person: Person, who: str, locale: str = "en-GB") -> Page:
    """A new device (browser context) of ``person``, signed in through the sign-in page."""
    page = await b.page(who, locale=locale)
    await open_app(page)
    await sign_in(page, person)
    return page


async def read_download(page: Page, link_name: str | re.Pattern[str]) -> tuple[str, bytes]:
    """Click the link ``link_name`` and return the downloaded file's suggested name and bytes."""
    async with page.expect_download() as info:
        await page.get_by_role("link", name=link_name).first.click()
    download = await info.value
    assert await download.failure() is None
    path = await download.path()
    return download.suggested_filename, await asyncio.to_thread(path.read_bytes)


async def upload(page: Page, title: str, name: str, content: bytes) -> None:
    form = page.locator("form", has=page.get_by_role("heading", name="Add a document"))
    await form.get_by_label("File", exact=True).set_input_files(
        {"name": name, "mimeType": "application/octet-stream", "buffer": content}
    )
    await form.get_by_label("Document title").fill(title)
    await form.get_by_role("button", name="Upload").click()


async def test_practitioner_writes_patient_reads_others_see_nothing(tmp_path: Path) -> None:
    async with (
        web_hub(tmp_path / "hub", records_max_upload_bytes=64 * 1024) as hub,
        chromium(hub.http) as b,
    ):
        org = await new_org(hub, "Clinique des Lilas")
        claire = await enrolled(
            hub, org, "practitioner", "Dr Claire Martin", "claire@lilas.example"
        )
        paul = await enrolled(hub, org, "patient", "Paul Durand", "paul@lilas.example")
        bob = await enrolled(hub, org, "practitioner", "Dr Bob Leroy", "bob@lilas.example")
        sarah = await enrolled(hub, org, "secretary", "Sarah Blanc", "sarah@lilas.example")
        other = await new_org(hub, "Hôpital du Nord")
        olga = await enrolled(hub, other, "practitioner", "Dr Olga Petit", "olga@nord.example")
        admin = hub.components.accounts.admin
        await admin.add_care(None, policy.Relationship("follows", claire.user_id, paul.user_id))
        await admin.grant_delegation(None, claire.user_id, sarah.user_id, ["consultations"])

        # -- the practitioner opens her patient's record from her home --
        pc = await signed_in(b, claire, "practitioner")
        patients = pc.locator("section", has=pc.get_by_role("heading", name="Your patients"))
        await patients.get_by_role("link", name="Medical record").click()
        await expect(pc.get_by_role("heading", name="Medical record of Paul Durand")).to_be_visible(
            timeout=WAIT_MS
        )
        await expect(pc.get_by_text("No document you may see.")).to_be_visible()

        # -- a file that is not of an accepted type, then one too large: refused in words --
        alert = pc.locator("form", has_text="Add a document").get_by_role("alert")
        await upload(pc, "Notes", "notes.pdf", b"just some text, whatever the name says")
        await expect(alert).to_have_text(re.compile("This kind of file is not accepted"))
        await upload(pc, "Scan", "scan.pdf", PDF + b"\0" * (70 * 1024))
        await expect(alert).to_have_text(re.compile("larger than the server accepts"))
        await upload(pc, "EEG of 12 March", "eeg-2024-03-12.pdf", PDF)
        rows = pc.locator("tr[data-document]")
        await expect(rows).to_have_count(1, timeout=WAIT_MS)
        await expect(rows.first).to_contain_text("EEG of 12 March")
        await expect(rows.first).to_contain_text("PDF")
        await expect(alert).to_be_hidden()

        # -- a report: draft, edited, signed; its history names the author --
        form = pc.locator("form", has=pc.get_by_role("heading", name="Write a report"))
        await form.get_by_label("Report title").fill("Consultation of 12 March")
        await form.get_by_label("Text").fill("Absences since January.")
        await form.get_by_role("button", name="Save as draft").click()
        await expect(pc.get_by_role("heading", name="Consultation of 12 March")).to_be_visible(
            timeout=WAIT_MS
        )
        report_url = pc.url
        assert re.search(r"#/records/[a-z]-[0-9a-f]+/r/[a-z]-[0-9a-f]+$", report_url)
        await expect(pc.locator(".rep .rec-status")).to_have_text("Draft")
        editor = pc.locator("form.rep-editor")
        await editor.get_by_label("Text").fill(SIGNED_TEXT)
        await editor.get_by_role("button", name="Save the draft").click()
        await expect(pc.get_by_role("status")).to_have_text("Draft saved.", timeout=WAIT_MS)
        await expect(pc.locator(".rep .rep-text")).to_have_text(SIGNED_TEXT)
        pc.on("dialog", lambda d: d.accept())
        await pc.locator("form.rep-editor").get_by_role("button", name="Sign").click()
        await expect(pc.get_by_role("status")).to_have_text("Report signed.", timeout=WAIT_MS)
        await expect(pc.locator(".rep .rec-status")).to_have_text("Signed")
        await expect(pc.locator(".rep-signed")).to_contain_text("Signed by Dr Claire Martin")
        await expect(pc.locator("form.rep-editor")).to_have_count(0)  # signed: no editing
        history = pc.locator(".rep-history tbody tr")
        await expect(history).to_have_count(3, timeout=WAIT_MS)
        await expect(history.first).to_contain_text("Signed")
        await expect(history.last).to_contain_text("Created")
        await expect(history.last).to_contain_text("Dr Claire Martin")
        await shoot(pc, "report-signed")
        await pc.get_by_role("link", name="Back to the record").click()
        await expect(pc.locator("tr[data-report]")).to_contain_text("Signed", timeout=WAIT_MS)
        await shoot(pc, "record-practitioner")

        # -- the patient sees the signed report and downloads the document --
        pp = await signed_in(b, paul, "patient")
        await pp.get_by_role("link", name="Open my medical record").click()
        await expect(pp.get_by_role("heading", name="My medical record")).to_be_visible(
            timeout=WAIT_MS
        )
        await expect(pp.locator("tr[data-document]")).to_contain_text("EEG of 12 March")
        await expect(pp.get_by_role("heading", name="Add a document")).to_have_count(0)
        await expect(pp.get_by_role("heading", name="Write a report")).to_have_count(0)
        name, data = await read_download(pp, "Download")
        assert data == PDF
        assert name.endswith(".pdf")
        await shoot(pp, "record-patient")
        await pp.get_by_role("link", name="Consultation of 12 March").click()
        await expect(pp.locator(".rep .rep-text")).to_have_text(SIGNED_TEXT, timeout=WAIT_MS)
        await expect(pp.get_by_role("button", name="Amend")).to_have_count(0)

        # -- an amendment is a draft: the patient still sees the signed text until it is signed --
        await pc.goto(report_url)
        await pc.get_by_role("button", name="Amend").click()
        amend = pc.locator("form.rep-editor")
        await amend.get_by_label("Text").fill(AMENDED_TEXT)
        await amend.get_by_role("button", name="Save the amendment as a draft").click()
        await expect(pc.locator(".rep .rec-status")).to_have_text("Draft", timeout=WAIT_MS)
        await expect(pc.locator(".rep")).to_contain_text("Amends version 3")
        await pp.reload()
        await expect(pp.locator(".rep .rep-text")).to_have_text(SIGNED_TEXT, timeout=WAIT_MS)
        await expect(pp.locator(".rep .rec-status")).to_have_text("Signed")
        await expect(pp.locator(".rep-history tbody tr")).to_have_count(1, timeout=WAIT_MS)
        assert "valproate" not in await pp.locator("body").inner_text()
        await pc.locator("form.rep-editor").get_by_role("button", name="Sign").click()
        await expect(pc.locator(".rep .rec-status")).to_have_text("Signed", timeout=WAIT_MS)
        await pp.reload()
        await expect(pp.locator(".rep .rep-text")).to_have_text(AMENDED_TEXT, timeout=WAIT_MS)
        await expect(pp.locator(".rep-history tbody tr")).to_have_count(2, timeout=WAIT_MS)

        # -- the patient exports their data: a tar holding export.json --
        await pp.get_by_role("link", name="Back to the record").click()
        name, data = await read_download(pp, "Export my data")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            names = tar.getnames()
            assert "export.json" in names
            exported = tar.extractfile("export.json")
            assert exported is not None
            assert "Consultation of 12 March" in json.dumps(json.load(exported))
        assert any(n.startswith("files/") and n.endswith(".pdf") for n in names)

        # -- an unrelated practitioner, one of another organisation: nothing, "not found" --
        record_url = report_url.split("/r/")[0]
        for person, who in ((bob, "unrelated practitioner"), (olga, "other organisation")):
            page = await signed_in(b, person, who)
            await page.goto(record_url)
            await expect(page.get_by_text("No document you may see.")).to_be_visible(
                timeout=WAIT_MS
            )
            await expect(page.get_by_text("No report you may see.")).to_be_visible()
            await expect(page.get_by_role("heading", name="Add a document")).to_have_count(0)
            await page.goto(report_url)
            await expect(
                page.get_by_role("heading", name="This record is not available")
            ).to_be_visible(timeout=WAIT_MS)
            await expect(page.get_by_role("alert")).to_have_text(
                "Not found, or not visible to you."
            )
            body = await page.locator("body").inner_text()
            for secret in ("Paul Durand", "12 March", "spike", "valproate"):
                assert secret not in body, (who, secret)

        # -- a secretary delegated only consultations: the index with titles hidden, no report --
        ps = await signed_in(b, sarah, "secretary", locale="fr-FR")
        await ps.goto(record_url)
        rows = ps.locator("tr[data-document], tr[data-report]")
        await expect(rows).to_have_count(2, timeout=WAIT_MS)
        await expect(ps.locator(".hidden-title")).to_have_count(2)
        await expect(ps.get_by_role("link", name="Télécharger")).to_have_count(0)
        assert "12 March" not in await ps.locator("body").inner_text()
        await ps.goto(report_url)
        await expect(ps.get_by_role("alert")).to_have_text(
            "Vous n\u2019êtes pas autorisé à faire cela.", timeout=WAIT_MS
        )


async def test_admin_erases_an_account_after_typing_its_name(tmp_path: Path) -> None:
    async with web_hub(tmp_path / "hub") as hub, chromium(hub.http) as b:
        org = await new_org(hub, "Clinique des Lilas")
        alice = await enrolled(hub, org, "admin", "Alice Admin", "alice@lilas.example")
        paul = await enrolled(hub, org, "patient", "Paul Durand", "paul@lilas.example")
        pp = await signed_in(b, paul, "patient")
        pa = await signed_in(b, alice, "admin")
        row = pa.get_by_role("row", name=re.compile("Paul Durand"))
        await row.get_by_role("button", name="Erase…").click()
        confirm = pa.locator("form.erase")
        erase = confirm.get_by_role("button", name="Erase this account")
        await expect(erase).to_be_disabled()
        await confirm.get_by_label("Type “Paul Durand” to confirm").fill("Paul")
        await expect(erase).to_be_disabled()
        await confirm.get_by_label("Type “Paul Durand” to confirm").fill("Paul Durand")
        await expect(erase).to_be_enabled()
        await shoot(pa, "erase-confirm")
        await erase.click()
        await expect(pa.get_by_role("status").filter(has_text="erased")).to_have_text(
            "The account of Paul Durand was erased.", timeout=WAIT_MS
        )
        erased = pa.locator(f"tr[data-user='{paul.user_id}']")
        await expect(erased).to_contain_text("Pseudonym", timeout=WAIT_MS)
        await expect(erased).to_contain_text("Disabled")
        await expect(pa.get_by_role("row", name=re.compile("Paul Durand"))).to_have_count(0)
        # the person's sessions ended with the erasure: their page is back at the sign-in
        await expect(pp.get_by_role("heading", name="Sign in")).to_be_visible(timeout=WAIT_MS)
