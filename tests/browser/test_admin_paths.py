"""The admin's People page, unread counts and the locked-out account, in Chromium.

An admin re-invites someone (the old link stops working, the new one enrols),
changes their role, grants and revokes a delegation (the secretary sees, then
loses, the practitioner's patient's record index), disables a signed-in patient
(sent back to the sign-in page, refused in words) and enables them again. A
practitioner's conversation list counts unread messages of conversations not on
screen, across a reload, and clears once one is opened. Wrong passwords lock an
account: the sign-in page says so in English and French; the admin sees and
lifts the lock; the owner's next sign-in tells them what happened.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Locator, Page, expect

from server import policy
from tests.accountstest import PASSWORD
from tests.browser.test_app import invite
from tests.browser.webtest import (
    WAIT_MS,
    Browsers,
    Person,
    chromium,
    enrol_from_link,
    enrolled,
    finish_enrolment,
    new_org,
    open_app,
    sign_in,
    web_hub,
)
from tests.hubtest import RunningHub

pytestmark = pytest.mark.slow  # Chromium and a hub per test: several seconds each

AUTH_FAILED_EN = (
    "Wrong email or password, or too many attempts. Check them and try again in a few "
    "minutes; if it still fails, ask your administrator."
)
AUTH_FAILED_FR = (
    "Adresse e-mail ou mot de passe incorrect, ou trop de tentatives. Vérifiez-les et "
    "réessayez dans quelques minutes ; si cela échoue encore, contactez votre administrateur."
)


async def signed_in(b: Browsers, person: Person, who: str, locale: str = "en-GB") -> Page:
    """A new device (browser context) of ``person``, signed in through the sign-in page."""
    page = await b.page(who, locale=locale)
    await open_app(page)
    await sign_in(page, person)
    return page


async def reload(page: Page, path: str | None = None) -> None:
    """Load the app again (at ``path``, or where it is): what a person does with F5."""
    if path is not None:
        await page.goto(path)
    await page.reload()
    await expect(page.locator("body[data-ready]")).to_be_attached(timeout=WAIT_MS)


async def password_step(page: Page, email: str, password: str) -> Locator:
    """Submit the first sign-in step and wait for its answer; the form's alert."""
    form = page.locator("form", has=page.locator("#signin-title"))
    await form.locator("input[type=email]").fill(email)
    await form.locator("input[type=password]").fill(password)
    await form.locator("button[type=submit]").click()
    await expect(form).to_have_attribute("aria-busy", "false", timeout=WAIT_MS)
    return form.get_by_role("alert")


def person_row(page: Page, name: str) -> Locator:
    return page.get_by_role("row", name=re.compile(name))


async def signed_report(hub: RunningHub, author: Person, patient_id: str, title: str) -> None:
    """A consultation note written and signed by ``author`` through the records API."""
    headers = {"authorization": f"Bearer {author.token}"}
    async with httpx.AsyncClient(base_url=hub.api, headers=headers) as http:
        body = {"patient_id": patient_id, "kind": "consultation_note", "title": title}
        made = await http.post("/records/reports", json={**body, "text": "Seen today."})
        assert made.status_code == 201, made.text
        report = made.json()
        signed = await http.post(
            f"/records/reports/{report['id']}/sign", json={"version": report["version"]}
        )
        assert signed.status_code == 200, signed.text


async def test_admin_reinvites_changes_roles_delegates_disables_and_enables(
    tmp_path: Path,
) -> None:
    async with web_hub(tmp_path / "hub") as hub, chromium(hub.http) as b:
        org = await new_org(hub, "Clinique des Lilas")
        alice = await enrolled(hub, org, "admin", "Alice Admin", "alice@lilas.example")
        claire = await enrolled(
            hub, org, "practitioner", "Dr Claire Martin", "claire@lilas.example"
        )
        paul = await enrolled(hub, org, "patient", "Paul Durand", "paul@lilas.example")
        pa = await signed_in(b, alice, "admin")
        pa.on("dialog", lambda d: d.accept())
        status = pa.locator(".admin > .status-area")

        # -- the admin records that Dr Martin follows Paul; she signs a note in his record --
        care = pa.locator("form", has=pa.get_by_role("heading", name="Record a care relationship"))
        await care.get_by_label("Kind").select_option(label="Follow-up")
        await care.get_by_label("Practitioner", exact=True).select_option(label="Dr Claire Martin")
        await care.get_by_label("Patient", exact=True).select_option(label="Paul Durand")
        await care.get_by_role("button", name="Record").click()
        await expect(pa.get_by_text("Care relationship recorded.")).to_be_visible(timeout=WAIT_MS)
        await expect(care.locator("li", has_text="Paul Durand")).to_contain_text("Follow-up")
        await signed_report(hub, claire, paul.user_id, "Consultation of 3 May")

        # -- re-invite: the first link stops working, the new one enrols --
        first_link = await invite(pa, "Inès Roux", "ines@lilas.example", "Interpreter")
        await person_row(pa, "Inès Roux").get_by_role("button", name="Re-invite").click()
        await expect(status).to_contain_text("Done: Inès Roux", timeout=WAIT_MS)
        new_link = await status.locator("input.link-out").input_value()
        assert re.search(r"/#/invite/[A-Za-z0-9_-]+$", new_link)
        assert new_link != first_link
        await expect(person_row(pa, "Inès Roux")).to_contain_text("Invited")
        pi = await b.page("secretary-to-be")
        await pi.goto(first_link)
        await pi.get_by_label("New password", exact=True).fill(PASSWORD)
        await pi.get_by_label(re.compile("again")).fill(PASSWORD)
        await pi.get_by_role("button", name="Next").click()
        await expect(pi.get_by_role("alert")).to_have_text(
            "This invitation link is no longer valid (already used or expired). "
            "Ask your administrator for a new one.",
            timeout=WAIT_MS,
        )
        ines = Person("", "Inès Roux", "ines@lilas.example")
        await enrol_from_link(pi, new_link, ines)
        await finish_enrolment(pi)
        await reload(pa)
        await expect(person_row(pa, "Inès Roux")).to_contain_text("Active", timeout=WAIT_MS)

        # -- a new role: Inès becomes a secretary; her home is a secretary's --
        acting = pi.get_by_role("region", name="You act for", exact=True)
        await expect(pi.get_by_role("heading", name="Hello, Inès Roux")).to_be_visible()
        await expect(acting).to_have_count(0)
        row = person_row(pa, "Inès Roux")
        await row.get_by_label("Role of Inès Roux").select_option(label="Secretary")
        await row.get_by_role("button", name="Change role").click()
        await expect(status).to_contain_text("Done: Inès Roux", timeout=WAIT_MS)
        await expect(row.locator("td").nth(1)).to_have_text("Secretary", timeout=WAIT_MS)
        # her open page follows (closed 4011, reconnected, session read again): a secretary's
        await expect(acting).to_contain_text("No delegation.", timeout=WAIT_MS)
        record_path = f"/#/records/{paul.user_id}"
        await reload(pi, record_path)
        await expect(pi.get_by_text("No report you may see.")).to_be_visible(timeout=WAIT_MS)

        # -- a delegation: she acts for Dr Martin, and sees her patient's record index --
        deleg = pa.locator("form", has=pa.get_by_role("heading", name="Delegate to a secretary"))
        await deleg.get_by_label("Practitioner", exact=True).select_option(label="Dr Claire Martin")
        await deleg.get_by_label("Secretary", exact=True).select_option(label="Inès Roux")
        await deleg.get_by_role("button", name="Grant").click()
        await expect(pa.get_by_text("Delegation granted.")).to_be_visible(timeout=WAIT_MS)
        granted = deleg.locator("li", has_text="Inès Roux")
        await expect(granted).to_contain_text("Dr Claire Martin → Inès Roux consultations")
        await reload(pi, record_path)
        report_rows = pi.locator("tr[data-report]")
        await expect(report_rows).to_have_count(1, timeout=WAIT_MS)
        await expect(report_rows.locator(".hidden-title")).to_have_count(1)
        await reload(pi, "/#/")
        await expect(acting).to_contain_text("Dr Claire Martin", timeout=WAIT_MS)
        patients = pi.get_by_role("region", name="Patients of the practitioners you act for")
        await expect(patients.locator("li", has_text="Paul Durand")).to_be_visible(timeout=WAIT_MS)

        # -- revoked: the index and the patient are gone from her side --
        await granted.get_by_role("button", name="Revoke").click()
        await expect(deleg.locator("li", has_text="Inès Roux")).to_have_count(0, timeout=WAIT_MS)
        await reload(pi)
        await expect(acting).to_contain_text("No delegation.", timeout=WAIT_MS)
        await expect(patients.locator("li", has_text="Paul Durand")).to_have_count(0)
        await reload(pi, record_path)
        await expect(pi.get_by_text("No report you may see.")).to_be_visible(timeout=WAIT_MS)
        await expect(pi.locator("tr[data-report]")).to_have_count(0)

        # -- disabled: the patient's open page goes back to sign-in; signing in is refused --
        pp = await signed_in(b, paul, "patient")
        await person_row(pa, "Paul Durand").get_by_role("button", name="Disable").click()
        await expect(person_row(pa, "Paul Durand")).to_contain_text("Disabled", timeout=WAIT_MS)
        await expect(pp.get_by_role("heading", name="Sign in")).to_be_visible(timeout=WAIT_MS)
        await expect(pp.locator(".notice")).to_have_text(
            "Your session has ended (signed out, expired, or signed out from another device). "
            "Please sign in again."
        )
        alert = await password_step(pp, paul.email, PASSWORD)
        await expect(alert).to_have_text(AUTH_FAILED_EN)
        await expect(pp.get_by_role("button", name="Sign out")).to_have_count(0)

        # -- enabled again: the same password and a recovery code (this TOTP step is used) --
        await person_row(pa, "Paul Durand").get_by_role("button", name="Enable").click()
        await expect(person_row(pa, "Paul Durand")).to_contain_text("Active", timeout=WAIT_MS)
        enable = person_row(pa, "Paul Durand").get_by_role("button", name="Enable")
        await expect(enable).to_have_count(0)
        await reload(pp, "/#/signin")
        await sign_in(pp, paul, recovery=True)
        await expect(pp.get_by_role("heading", name="Your care team")).to_be_visible()


async def test_unread_counts_grow_live_and_clear_on_opening(tmp_path: Path) -> None:
    async with web_hub(tmp_path / "hub") as hub, chromium(hub.http) as b:
        org = await new_org(hub, "Clinique des Lilas")
        claire = await enrolled(
            hub, org, "practitioner", "Dr Claire Martin", "claire@lilas.example"
        )
        bob = await enrolled(hub, org, "practitioner", "Dr Bob Leroy", "bob@lilas.example")
        paul = await enrolled(hub, org, "patient", "Paul Durand", "paul@lilas.example")
        await hub.components.accounts.admin.add_care(
            None, policy.Relationship("consultation", claire.user_id, paul.user_id, "consult-7")
        )
        pc = await signed_in(b, claire, "practitioner")
        pq = await signed_in(b, paul, "patient")
        pb = await signed_in(b, bob, "colleague")

        # -- two conversations: the consultation (Claire opens it) and Bob's direct one --
        await pc.get_by_label("Consultation reference").fill("consult-7")
        await pc.get_by_role("button", name="Open the consultation conversation").click()
        await expect(pc.locator("h1", has_text="Consultation with Paul Durand")).to_be_visible(
            timeout=WAIT_MS
        )
        consult = await pc.evaluate("location.hash.slice(4)")  # #/c/<conv>
        colleague = pb.get_by_label("Colleague", exact=True)
        await expect(colleague.locator("option", has_text="Dr Claire Martin")).to_be_attached(
            timeout=WAIT_MS
        )
        await colleague.select_option(label="Dr Claire Martin")
        await pb.get_by_role("button", name="Write to this colleague").click()
        await expect(pb.get_by_label("Message", exact=True)).to_be_visible(timeout=WAIT_MS)

        async def send(page: Page, text: str) -> None:
            await page.get_by_label("Message", exact=True).fill(text)
            await page.get_by_label("Message", exact=True).press("Enter")
            mine = page.locator(".msg.mine", has_text=text)
            await expect(mine.locator(".receipt")).not_to_have_attribute(
                "data-receipt", "pending", timeout=WAIT_MS
            )

        # -- Claire is on her home: Paul writes twice, the count follows live --
        await pc.goto("/#/")
        convs = pc.get_by_role("region", name="Conversations", exact=True)
        consult_row = convs.locator(f"li[data-conv='{consult}']")
        bob_row = convs.locator("li", has_text="Dr Bob Leroy")
        await expect(bob_row).to_be_visible(timeout=WAIT_MS)
        await expect(consult_row.locator(".badge")).to_have_count(0)
        await pq.locator(".convs a", has_text="Dr Claire Martin").click()
        await send(pq, "Bonjour docteur.")
        await expect(consult_row.locator(".badge")).to_have_text("1 unread", timeout=WAIT_MS)
        await send(pq, "J'ai encore de la fièvre.")
        await expect(consult_row.locator(".badge")).to_have_text("2 unread", timeout=WAIT_MS)
        await expect(bob_row.locator(".badge")).to_have_count(0)
        # not read yet: Paul sees his messages delivered, not read
        await expect(pq.locator(".msg.mine .receipt").last).to_have_text("Delivered")

        # -- the count is the server's too: a reload shows it again --
        await reload(pc)
        await expect(consult_row.locator(".badge")).to_have_text("2 unread", timeout=WAIT_MS)

        # -- opening the conversation clears it; Paul sees "Read" --
        await consult_row.get_by_role("link").click()
        await expect(pc.locator(".msg .text")).to_have_text(
            ["Bonjour docteur.", "J'ai encore de la fièvre."], timeout=WAIT_MS
        )
        await expect(pq.locator(".msg.mine .receipt").last).to_have_text("Read", timeout=WAIT_MS)

        # -- while the consultation is open, Bob writes: only his conversation counts --
        await send(pb, "Tu as un moment pour un avis ?")
        await pc.locator("#nav").get_by_role("link", name="Conversations").click()
        listed = pc.locator("main .convs")
        await expect(listed.locator("li", has_text="Dr Bob Leroy").locator(".badge")).to_have_text(
            "1 unread", timeout=WAIT_MS
        )
        await expect(listed.locator(f"li[data-conv='{consult}'] .badge")).to_have_count(0)
        await listed.get_by_role("link", name=re.compile("Dr Bob Leroy")).click()
        await expect(pc.locator(".msg .text")).to_have_text(["Tu as un moment pour un avis ?"])
        await expect(pb.locator(".msg.mine .receipt").last).to_have_text("Read", timeout=WAIT_MS)
        await reload(pc, "/#/conversations")
        await expect(pc.locator("main .convs li.conv")).to_have_count(2, timeout=WAIT_MS)
        await expect(pc.locator("main .convs .badge")).to_have_count(0)


async def test_locked_account_is_told_in_words_and_unlocked_by_the_admin(tmp_path: Path) -> None:
    async with web_hub(tmp_path / "hub") as hub, chromium(hub.http) as b:
        org = await new_org(hub, "Clinique des Lilas")
        alice = await enrolled(hub, org, "admin", "Alice Admin", "alice@lilas.example")
        paul = await enrolled(hub, org, "patient", "Paul Durand", "paul@lilas.example")

        # -- five wrong passwords (the lock), then the right one: refused alike, in words --
        pq = await b.page("patient")
        await open_app(pq)
        for n in range(5):
            alert = await password_step(pq, paul.email, f"Wrong-Horse-Battery-{n}")
            await expect(alert).to_have_text(AUTH_FAILED_EN)
        alert = await password_step(pq, paul.email, PASSWORD)
        await expect(alert).to_have_text(AUTH_FAILED_EN)
        await expect(pq.get_by_role("heading", name="Sign in")).to_be_visible()
        await pq.locator("#lang").click()
        await expect(alert).to_have_text(AUTH_FAILED_FR)

        # -- the admin lifts the lock (from this address: the account is not locked elsewhere) --
        pa = await signed_in(b, alice, "admin")
        row = person_row(pa, "Paul Durand")
        await row.get_by_role("button", name="Unlock").click()
        await expect(pa.locator(".admin > .status-area")).to_contain_text("Done: Paul Durand")

        # -- Paul signs in (in French now) and is told what happened and what to do --
        await sign_in(pq, paul)
        banner = pq.locator("#banner")
        await expect(banner).to_have_attribute("data-state", "online", timeout=WAIT_MS)
        await expect(banner).to_contain_text(
            re.compile(
                r"il y a eu 5 tentatives de connexion échouées sur votre compte, ou il a été "
                r"bloqué \(dernière : .+\)\. Si ce n\u2019était pas vous, changez votre mot "
                r"de passe et prévenez votre administrateur\."
            ),
            timeout=WAIT_MS,
        )
        await banner.get_by_role("button", name="Fermer").click()
        await expect(banner).to_be_hidden()
