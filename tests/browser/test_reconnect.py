"""The browser app when things go wrong: a server restart, a session ended, overload.

The server is stopped under an open conversation (going_away, close 1012):
both pages say it is restarting, a message written meanwhile waits, and once
a new server runs on the same port and data, every message is shown exactly
once on both sides. Signing out one's other devices ends their session
(close 4010), which the other device says in words; an expired password
leads to the change-password screen; a busy server's 429 is counted down.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect
from websockets.asyncio.client import connect

from protocol.codec import SUBPROTOCOL_JSON
from server.policy import Relationship
from tests.accountstest import PASSWORD
from tests.browser.webtest import (
    WAIT_MS,
    Person,
    chromium,
    enrolled,
    new_org,
    open_app,
    shoot,
    sign_in,
    web_hub,
)
from tests.hubtest import RunningHub

pytestmark = pytest.mark.slow  # Chromium and a hub per test: several seconds each

RECONNECT_MS = 20_000  # the client's backoff is capped at 15 s


async def open_consultation(page: Page, ref: str) -> None:
    await page.get_by_label("Consultation reference").fill(ref)
    await page.get_by_role("button", name="Open the consultation conversation").click()
    await expect(page.locator(".conversation h1")).to_contain_text(
        "Consultation with", timeout=WAIT_MS
    )


async def seed_history(hub: RunningHub, author: Person, ref: str, count: int) -> list[str]:
    """``count`` messages in the consultation ``ref``, sent by ``author`` over a socket."""
    async with connect(hub.url, subprotocols=[SUBPROTOCOL_JSON], ping_interval=None) as ws:  # type: ignore[list-item]

        async def call(msg: dict[str, Any]) -> Any:
            await ws.send(json.dumps(msg))
            while True:
                reply = json.loads(await ws.recv())
                if reply.get("id") == msg["id"]:
                    assert reply["type"] in ("welcome", "result"), reply
                    return reply.get("data")

        await call({"type": "hello", "id": 0, "auth": {"method": "token", "token": author.token}})
        conv = (
            await call(
                {"type": "chat.create", "id": 1, "kind": "consultation", "consultation": ref}
            )
        )["conv"]
        texts = [f"history {i}" for i in range(count)]
        for i, text in enumerate(texts):
            msg = {
                "type": "chat.send",
                "id": 2 + i,
                "conv": conv,
                "client_msg_id": f"h{i}",
                "text": text,
            }
            await call(msg)
    return texts


async def send(page: Page, text: str) -> None:
    await page.get_by_label("Message", exact=True).fill(text)
    await page.get_by_label("Message", exact=True).press("Enter")


async def test_server_restart_under_an_open_conversation(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    async with web_hub(data) as hub1, chromium(hub1.http) as b:
        port = hub1.port
        org = await new_org(hub1, "Clinique des Lilas")
        claire = await enrolled(
            hub1, org, "practitioner", "Dr Claire Martin", "claire@lilas.example"
        )
        paul = await enrolled(hub1, org, "patient", "Paul Durand", "paul@lilas.example")
        consultation = Relationship("consultation", claire.user_id, paul.user_id, "consult-9")
        await hub1.components.accounts.admin.add_care(None, consultation)
        pp, pq = await b.page("practitioner"), await b.page("patient")
        for page, person in ((pp, claire), (pq, paul)):
            await open_app(page)
            await sign_in(page, person)
        history = await seed_history(hub1, claire, "consult-9", 70)
        await open_consultation(pp, "consult-9")
        await open_consultation(pq, "consult-9")
        # the newest page first; scrolling up loads the older ones (infinite scroll)
        for page in (pp, pq):
            await expect(page.locator(".msg .text")).to_have_count(50, timeout=WAIT_MS)
            await page.locator(".messages").evaluate("el => { el.scrollTop = 0; }")
            await expect(page.locator(".msg .text")).to_have_text(history, timeout=WAIT_MS)
        await send(pp, "one")
        await send(pq, "two")
        for page in (pp, pq):
            await expect(page.locator(".msg .text")).to_have_text(
                [*history, "one", "two"], timeout=WAIT_MS
            )

        # -- the server stops: both pages say so, and a message written now waits --
        hub1.server.should_exit = True
        await hub1.task
        for page in (pp, pq):
            banner = page.locator("#banner")
            await expect(banner).to_contain_text("The server is restarting", timeout=WAIT_MS)
            await expect(banner).to_contain_text("Reconnecting")
        await shoot(pq, "reconnecting")
        await send(pq, "three, written while the server was down")
        await expect(pq.locator(".msg.pending .receipt")).to_have_text("Sending…")

        # -- a new server on the same port and data: everything exactly once --
        async with web_hub(data, port=port):
            for page in (pp, pq):
                await expect(page.locator("#banner")).to_be_hidden(timeout=RECONNECT_MS)
                await expect(page.locator(".msg .text")).to_have_text(
                    [*history, "one", "two", "three, written while the server was down"],
                    timeout=WAIT_MS,
                )
            await send(pp, "four")
            for page in (pp, pq):
                await expect(page.locator(".msg .text")).to_have_text(
                    [*history, "one", "two", "three, written while the server was down", "four"],
                    timeout=WAIT_MS,
                )
                await expect(page.locator(".msg.pending")).to_have_count(0)
            # a reload reads the newest page from the store: nothing was stored twice
            await pq.reload()
            await expect(pq.locator(".msg .text")).to_have_text(
                [*history[-46:], "one", "two", "three, written while the server was down", "four"],
                timeout=WAIT_MS,
            )


async def test_sign_out_other_devices_and_expired_password(tmp_path: Path) -> None:
    # Staff passwords expire at once: the practitioner's next sign-in must change it.
    async with web_hub(tmp_path / "hub", password_max_age_days=0) as hub, chromium(hub.http) as b:
        org = await new_org(hub, "Clinique des Lilas")
        paul = await enrolled(hub, org, "patient", "Paul Durand", "paul@lilas.example")
        laptop, phone = await b.page("laptop"), await b.page("phone", locale="fr-FR")
        await open_app(laptop)
        # a wrong password: said in words, with what to do (the same words as a lockout)
        await laptop.get_by_label("Email").fill(paul.email)
        await laptop.get_by_label("Password").fill("not-the-password")
        await laptop.get_by_role("button", name="Next").click()
        await expect(laptop.get_by_role("alert")).to_contain_text(
            "Wrong email or password, or too many attempts"
        )
        await sign_in(laptop, paul)
        await open_app(phone)
        await sign_in(phone, paul, recovery=True)  # a recovery code instead of the app

        await laptop.get_by_role("link", name="My sessions").click()
        rows = laptop.locator("table.sessions tbody tr")
        # the laptop, the phone, and the session enrolment opened (over HTTP, as the CLI does)
        await expect(rows).to_have_count(3, timeout=WAIT_MS)
        await expect(laptop.locator("tr.current")).to_contain_text("This device")
        await shoot(laptop, "sessions")
        await laptop.get_by_role("button", name="Sign out my other devices").click()
        await expect(
            laptop.get_by_role("status").filter(has_text="2 other sessions signed out.")
        ).to_be_visible()
        await expect(rows).to_have_count(1)
        # the phone's socket is closed (4010): it says so and asks to sign in again
        await expect(phone.get_by_role("heading", name="Connexion")).to_be_visible(timeout=WAIT_MS)
        await expect(phone.locator(".notice")).to_contain_text("Votre session est terminée")
        await shoot(phone, "session-ended")

        claire = await enrolled(
            hub, org, "practitioner", "Dr Claire Martin", "claire@lilas.example"
        )
        office = await b.page("office")
        await open_app(office)
        await sign_in(office, claire, expect_home=False)
        await expect(office.get_by_role("heading", name="Change your password")).to_be_visible(
            timeout=WAIT_MS
        )
        await shoot(office, "password-expired")
        await office.get_by_label("New password", exact=True).fill("Another-Long-Pass-42!")
        await office.get_by_label("New password, again").fill("Another-Long-Pass-42!")
        await office.get_by_role("button", name="Change password").click()
        await expect(office.get_by_role("heading", name=re.compile("Hello"))).to_be_visible(
            timeout=WAIT_MS
        )


async def test_a_busy_server_says_when_to_try_again(tmp_path: Path) -> None:
    """A 429 with Retry-After: said in words, the form waits out the delay, then works."""
    async with web_hub(tmp_path / "hub", password_hash_queue_max=1) as hub, chromium(hub.http) as b:
        org = await new_org(hub, "Clinique des Lilas")
        paul = await enrolled(hub, org, "patient", "Paul Durand", "paul@lilas.example")
        page = await b.page("patient")
        await open_app(page)
        next_button = page.get_by_role("button", name="Next")
        with hub.components.accounts.service.hasher.slot():  # the only hashing slot is taken
            await page.get_by_label("Email").fill(paul.email)
            await page.get_by_label("Password").fill(PASSWORD)
            await next_button.click()
            alert = page.get_by_role("alert")
            await expect(alert).to_contain_text("Too many requests right now. Try again in")
            await expect(alert).to_contain_text(re.compile(r"Please wait \d+ seconds?"))
            await expect(next_button).to_be_disabled()
        await expect(alert).to_contain_text("You can try again now.", timeout=WAIT_MS)
        await expect(next_button).to_be_enabled()
        await sign_in(page, paul)
