"""The browser app in Chromium: enrolment, sign-in, a consultation chat, presence, isolation.

One clinic, as people use it: the admin invites a practitioner and a patient
from the People page; each enrols from their link (a wrong code first), signs
in with TOTP, and they chat in their consultation with receipts, typing and
presence seen on the other side, live across tabs. Someone of another
organisation sees none of it. Screenshots of each screen, in English and
French, go to docs/screenshots/.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, expect

from tests.browser.webtest import (
    PHONE,
    WAIT_MS,
    Person,
    chromium,
    enrol_from_link,
    enrolled,
    finish_enrolment,
    new_org,
    open_app,
    shoot,
    sign_in,
    sign_out,
    web_hub,
)

pytestmark = pytest.mark.slow  # Chromium and a hub per test: several seconds each


async def invite(page: Page, name: str, email: str, role: str) -> str:
    """Invite from the People page; the invitation link shown."""
    form = page.locator("form", has=page.get_by_role("heading", name="Invite someone"))
    await form.get_by_label("Name", exact=True).fill(name)
    await form.get_by_label("Email", exact=True).fill(email)
    await form.get_by_label("Role", exact=True).select_option(label=role)
    await form.get_by_role("button", name="Create the invitation").click()
    link = form.locator("input.link-out")
    await expect(link).to_have_value(re.compile(r"/#/invite/[A-Za-z0-9_-]+$"), timeout=WAIT_MS)
    await expect(page.get_by_role("row", name=re.compile(name))).to_contain_text("Invited")
    return await link.input_value()


async def record_consultation(page: Page, practitioner: str, patient: str, ref: str) -> None:
    form = page.locator("form", has=page.get_by_role("heading", name="Record a care relationship"))
    await form.get_by_label("Kind").select_option(label="Consultation")
    await form.get_by_label("Practitioner", exact=True).select_option(label=practitioner)
    await form.get_by_label("Patient", exact=True).select_option(label=patient)
    await form.get_by_label("Consultation reference").fill(ref)
    await form.get_by_role("button", name="Record").click()
    await expect(page.get_by_text("Care relationship recorded.")).to_be_visible(timeout=WAIT_MS)


def presence_of(page: Page, scope: str, name: str) -> Locator:
    """The presence badge next to ``name`` within ``scope`` (a CSS selector)."""
    return page.locator(scope).locator("li", has_text=name).locator(".presence")


async def test_clinic_enrols_and_chats_live(tmp_path: Path) -> None:
    async with web_hub(tmp_path / "hub") as hub, chromium(hub.http) as b:
        org = await new_org(hub, "Clinique des Lilas")
        admin = await enrolled(hub, org, "admin", "Alice Admin", "alice@lilas.example")

        # -- the admin signs in and invites a practitioner and a patient --
        pa = await b.page("admin")
        await open_app(pa)
        await shoot(pa, "signin")
        await sign_in(pa, admin)
        await expect(pa.get_by_role("heading", name="People of your organisation")).to_be_visible()
        prac_link = await invite(pa, "Dr Claire Martin", "claire@lilas.example", "Practitioner")
        pat_link = await invite(pa, "Paul Durand", "paul@lilas.example", "Patient")
        await record_consultation(pa, "Dr Claire Martin", "Paul Durand", "consult-1")
        await shoot(pa, "admin-people")

        # -- each enrols from their link (a wrong code first), then signs in with TOTP --
        claire = Person("", "Dr Claire Martin", "claire@lilas.example")
        pp = await b.page("practitioner", locale="fr-FR")  # a French browser gets French
        await enrol_from_link(pp, prac_link, claire, on_qr=lambda: shoot(pp, "enrol-qr"))
        await expect(pp.locator("html[lang=fr]")).to_be_attached()
        await shoot(pp, "enrol-recovery-codes")
        await finish_enrolment(pp)
        paul = Person("", "Paul Durand", "paul@lilas.example")
        pq = await b.page("patient")
        await enrol_from_link(pq, pat_link, paul)
        await finish_enrolment(pq)
        for page, person in ((pp, claire), (pq, paul)):
            await sign_out(page)
            await expect(page.get_by_role("status")).to_contain_text(
                re.compile("signed out|déconnecté")
            )
            await sign_in(page, person)

        # -- homes with names and live presence --
        await expect(presence_of(pp, ".people", "Paul Durand")).to_have_attribute(
            "data-state", "online", timeout=WAIT_MS
        )
        await expect(presence_of(pq, ".people", "Dr Claire Martin")).to_have_attribute(
            "data-state", "online", timeout=WAIT_MS
        )
        await shoot(pp, "home-practitioner")

        # -- the practitioner opens the consultation; it appears on the patient's home --
        await pp.get_by_label("Référence de la consultation").fill("consult-1")
        await pp.get_by_role("button", name="Ouvrir la conversation de consultation").click()
        await expect(
            pp.get_by_role("heading", name=re.compile("Consultation avec Paul Durand"))
        ).to_be_visible(timeout=WAIT_MS)
        consult = pq.locator(".convs a", has_text="Dr Claire Martin")
        await expect(consult).to_be_visible(timeout=WAIT_MS)
        await shoot(pq, "home-patient")
        await consult.click()
        await expect(
            pq.get_by_role("heading", name=re.compile("Consultation with Dr Claire Martin"))
        ).to_be_visible()

        # -- chat both ways: typing, delivery and read receipts seen on the other side --
        await pp.get_by_label("Message", exact=True).fill("Bonjour Paul, comment allez-vous ?")
        await expect(pq.locator(".typing")).to_contain_text(
            "Dr Claire Martin is typing", timeout=WAIT_MS
        )
        await pp.get_by_label("Message", exact=True).press("Enter")
        await expect(pq.locator(".msg .text")).to_have_text(
            ["Bonjour Paul, comment allez-vous ?"], timeout=WAIT_MS
        )
        mine = pp.locator(".msg.mine").last
        await expect(mine.locator(".receipt")).to_have_attribute(
            "data-receipt", "read", timeout=WAIT_MS
        )
        await expect(mine.locator(".receipt")).to_have_text("Lu")

        await pq.get_by_label("Message", exact=True).fill("Hello doctor, much better.")
        await expect(pp.locator(".typing")).to_contain_text(
            re.compile("Paul Durand est en train d.écrire"), timeout=WAIT_MS
        )
        await pq.get_by_role("button", name="Send").click()
        await expect(pp.locator(".msg .text").last).to_have_text(
            "Hello doctor, much better.", timeout=WAIT_MS
        )
        await expect(pq.locator(".msg.mine .receipt")).to_have_attribute(
            "data-receipt", "read", timeout=WAIT_MS
        )

        # -- across tabs: a second tab of the patient follows the same conversation --
        pq2 = await b.tab(pq, "patient tab 2")
        await pq2.goto(pq.url)
        await expect(pq2.locator(".msg .text")).to_have_count(2, timeout=WAIT_MS)
        await pp.get_by_label("Message", exact=True).fill("Parfait. Je vous rappelle demain.")
        await pp.get_by_label("Message", exact=True).press("Enter")
        for page in (pq, pq2):
            await expect(page.locator(".msg .text").last).to_have_text(
                "Parfait. Je vous rappelle demain.", timeout=WAIT_MS
            )

        # -- edit and delete one's own message; the other side sees both --
        await pq.locator(".msg.mine").last.get_by_role("button", name="Edit").click()
        await pq.get_by_label("Message", exact=True).fill("Hello doctor, much better, thank you.")
        await pq.get_by_role("button", name="Save").click()
        edited = pp.locator(".msg", has_text="much better, thank you.")
        await expect(edited.locator(".edited")).to_be_visible(timeout=WAIT_MS)
        pp.on("dialog", lambda d: d.accept())
        await pp.locator(".msg.mine").last.get_by_role("button", name="Supprimer").click()
        await expect(pq.locator(".msg.deleted")).to_have_count(1, timeout=WAIT_MS)
        await expect(pq.locator(".msg", has_text="Parfait")).to_have_count(0)
        await expect(pq2.locator(".msg.deleted")).to_have_count(1, timeout=WAIT_MS)
        await shoot(pp, "conversation")
        pp_phone = await b.tab(pp, "practitioner phone")
        await pp_phone.set_viewport_size(PHONE)
        await pp_phone.goto(pp.url)
        await expect(pp_phone.locator(".msg")).to_have_count(3, timeout=WAIT_MS)
        await shoot(pp_phone, "conversation-phone")
        await pp_phone.close()

        # -- presence: the patient closes their tabs, the practitioner sees it --
        header = pp.locator(".conv-head .presence")
        await expect(header).to_have_attribute("data-state", "online")
        patient_device = pq.context
        await pq2.close()
        await pq.close()
        await expect(header).to_have_attribute("data-state", "offline", timeout=WAIT_MS)
        await expect(header).to_have_text("Hors ligne")
        pq = await b.tab(patient_device, "patient again")
        await pq.goto("/#/")
        await expect(header).to_have_attribute("data-state", "online", timeout=WAIT_MS)
        await pp.close()
        await expect(presence_of(pq, ".people", "Dr Claire Martin")).to_have_attribute(
            "data-state", "offline", timeout=WAIT_MS
        )
        await expect(pq.locator(".convs .badge")).to_have_count(0)

        # -- another organisation sees none of it --
        other_org = await new_org(hub, "Hôpital du Nord")
        olga = await enrolled(hub, other_org, "practitioner", "Dr Olga Petit", "olga@nord.example")
        po = await b.page("other org")
        await open_app(po)
        await sign_in(po, olga)
        await expect(po.locator(".convs .empty")).to_have_text(
            "No conversation yet.", timeout=WAIT_MS
        )
        await expect(po.locator(".people").first.locator(".empty")).to_be_visible()
        consult_id = await pq.locator(".convs li").first.get_attribute("data-conv")
        await po.goto(f"/#/c/{consult_id}")
        await expect(
            po.get_by_role("heading", name="This conversation is not available")
        ).to_be_visible(timeout=WAIT_MS)
        body = await po.locator("body").inner_text()
        for secret in ("Paul Durand", "Claire Martin", "Bonjour", "much better", "consult-1"):
            assert secret not in body

        # -- rights change (close 4011): the admin ends the consultation; the patient's page
        # reconnects by itself, with the new rights: the practitioner leaves the care team --
        await pa.locator("li", has_text="consult-1").get_by_role("button", name="End").click()
        await expect(pa.locator("li", has_text="consult-1")).to_have_count(0, timeout=WAIT_MS)
        await expect(pq.locator(".people li", has_text="Dr Claire Martin")).to_have_count(
            0, timeout=WAIT_MS
        )
        await expect(pq.get_by_role("button", name="Sign out")).to_be_visible()
        await expect(pq.locator("#banner")).to_be_hidden()
