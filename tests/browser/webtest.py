"""Helpers for the browser tests: a hub serving the app, Chromium, people, screenshots.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``.ci/services.sh``),
driven by Playwright for Python; no browser is ever downloaded. Each test starts
its own hub (real authenticator, cheap Argon2) on a free loopback port, with
that port's origin allowed, and its own Chromium.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    async_playwright,
    expect,
)

from server.accounts import totp
from tests.accountstest import CHEAP, PASSWORD, enrol
from tests.hubtest import RunningHub, free_socket, hub_settings, run_hub

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
#: Flags from shared/webrtc-testing.md (no WebRTC here, so no loopback or media flags).
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Seconds a browser-side expectation may take (events, not sleeps: Playwright polls the DOM).
WAIT_MS = 10_000
DESKTOP = {"width": 1100, "height": 760}
PHONE = {"width": 390, "height": 780}


def free_port() -> int:
    sock = free_socket(0)
    try:
        return int(sock.getsockname()[1])
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def web_hub(data: Path, port: int = 0, **overrides: Any) -> AsyncIterator[RunningHub]:
    """A hub serving the app on ``port`` (0: a free one) with its origin allowed."""
    port = port or free_port()
    settings = hub_settings(
        data,
        allowed_origins=[f"http://127.0.0.1:{port}"],
        shutdown_retry_after_s=0.2,
        **{**CHEAP, **overrides},
    )
    async with run_hub(settings, port=port) as hub:
        yield hub


@dataclass
class Person:
    """Someone with an account: their TOTP secret and the last step they used."""

    user_id: str
    name: str
    email: str
    secret: str = ""
    last_step: int = 0
    recovery_codes: list[str] = field(default_factory=list)
    token: str = ""  # the bearer session enrolment over HTTP opened (as the CLI's)

    def next_code(self) -> str:
        """A TOTP code not used yet (steps are accepted once, within one step of now)."""
        now = totp.step_at(time.time())
        step = max(self.last_step + 1, now - 1)
        assert step <= now + 1, "no unused TOTP step left in the window"
        self.last_step = step
        return totp.code_at(self.secret, step)

    def wrong_code(self) -> str:
        """A code that no step near now has."""
        now = totp.step_at(time.time())
        valid = {totp.code_at(self.secret, s) for s in range(now - 2, now + 3)}
        return next(c for c in ("000000", "111111", "123456", "999999") if c not in valid)


async def new_org(hub: RunningHub, name: str) -> str:
    return (await hub.components.accounts.admin.create_org(None, name)).id


async def enrolled(hub: RunningHub, org_id: str, role: str, name: str, email: str) -> Person:
    """Invite and enrol over HTTP (as the CLI would), with the code of now."""
    now = time.time()
    async with httpx.AsyncClient(base_url=hub.api) as http:
        e = await enrol(http, hub.components.accounts, org_id, role, email, now, name=name)
    return Person(e.user_id, name, email, e.secret, totp.step_at(now), e.recovery_codes, e.token)


@dataclass
class Browsers:
    """Chromium and the pages a test opened; CSP violations and page errors fail the test."""

    browser: Browser
    base: str
    problems: list[str] = field(default_factory=list)

    def watch(self, page: Page, who: str) -> None:
        def console(msg: ConsoleMessage) -> None:
            if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text:
                self.problems.append(f"{who}: {msg.text}")

        page.on("console", console)
        page.on("pageerror", lambda exc: self.problems.append(f"{who}: {exc}"))

    async def page(
        self, who: str, *, locale: str = "en-GB", viewport: dict[str, int] | None = None
    ) -> Page:
        """A page in a new browser context (its own cookies: one person, one device)."""
        context = await self.browser.new_context(
            locale=locale, viewport=viewport or DESKTOP, base_url=self.base
        )
        page = await context.new_page()
        self.watch(page, who)
        return page

    async def tab(self, device: Page | BrowserContext, who: str) -> Page:
        """Another tab of the same person (same context, same cookie)."""
        tab = await (device.context if isinstance(device, Page) else device).new_page()
        self.watch(tab, who)
        return tab


@contextlib.contextmanager
def tmpdir_env(path: Path) -> Iterator[None]:
    """``TMPDIR`` set to ``path`` (Chromium's profile and Playwright's files go there)."""
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(path)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved


@contextlib.asynccontextmanager
async def chromium(base: str, extra_args: Sequence[str] = ()) -> AsyncIterator[Browsers]:
    """Debian's Chromium, headless, with its temporary files in a folder removed afterwards.

    The folder's path is short: Chromium's singleton socket path must fit a
    Unix socket address (108 bytes), which pytest's ``tmp_path`` may not.
    ``extra_args``: more flags (the WebRTC ones of tests/browser/test_calls.py).
    """
    with (
        tempfile.TemporaryDirectory(prefix="medhub-chromium-") as scratch,
        tmpdir_env(Path(scratch)),
    ):
        async with async_playwright() as p:
            args = [*CHROMIUM_ARGS, *extra_args]
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=args)
            b = Browsers(browser, base)
            try:
                yield b
            finally:
                await browser.close()
            assert not b.problems, b.problems


# -- what a person does -------------------------------------------------------------------
async def open_app(page: Page, path: str = "/") -> None:
    await page.goto(path)
    await expect(page.locator("body[data-ready]")).to_be_attached(timeout=WAIT_MS)


async def sign_in(
    page: Page, person: Person, *, recovery: bool = False, expect_home: bool = True
) -> None:
    """Password, then a TOTP code (or a recovery code), from the sign-in page."""
    await page.get_by_label(re.compile("^(Email|Adresse e-mail)$")).fill(person.email)
    await page.get_by_label(re.compile("^(Password|Mot de passe)$")).fill(PASSWORD)
    await page.get_by_role("button", name=re.compile("^(Next|Suivant)$")).click()
    if recovery:
        await page.get_by_role("button", name=re.compile("recovery|secours")).click()
        await page.get_by_label(re.compile("^(Recovery code|Code de secours)$")).fill(
            person.recovery_codes.pop()
        )
    else:
        await page.get_by_label(re.compile("6")).fill(person.next_code())
    await page.get_by_role("button", name=re.compile("^(Sign in|Se connecter)$")).click()
    if expect_home:
        signout = page.get_by_role("button", name=re.compile("Sign out|Se déconnecter"))
        await expect(signout).to_be_visible(timeout=WAIT_MS)


async def enrol_from_link(
    page: Page, link: str, person: Person, on_qr: Callable[[], Awaitable[object]] | None = None
) -> None:
    """Open an invitation link, set the password, a wrong code first, then the right one.

    ``on_qr`` runs while the QR code is shown (screenshots).
    """
    await page.goto(link)
    await page.get_by_label(re.compile("^(New password|Nouveau mot de passe)$")).fill(PASSWORD)
    await page.get_by_label(re.compile("again|à nouveau")).fill(PASSWORD)
    await page.get_by_role("button", name=re.compile("^(Next|Suivant)$")).click()
    await expect(page.locator("img.qr")).to_be_visible(timeout=WAIT_MS)
    if on_qr is not None:
        await on_qr()
    await page.locator("details summary").click()
    person.secret = (await page.locator("code.secret").inner_text()).replace(" ", "")
    code = page.get_by_label(re.compile("6"))
    await code.fill(person.wrong_code())
    await page.get_by_role("button", name=re.compile("^(Confirm|Confirmer)$")).click()
    await expect(page.get_by_role("alert")).to_contain_text(re.compile("refused|refusé"))
    await code.fill(person.next_code())
    await page.get_by_role("button", name=re.compile("^(Confirm|Confirmer)$")).click()
    codes = page.locator("ol.codes li")
    await expect(codes).to_have_count(10, timeout=WAIT_MS)
    person.recovery_codes = [c.strip() for c in await codes.all_inner_texts()]


async def finish_enrolment(page: Page) -> None:
    await page.get_by_label(re.compile("saved|conservé")).check()
    await page.get_by_role("button", name=re.compile("^(Continue|Continuer)$")).click()
    signout = page.get_by_role("button", name=re.compile("Sign out|Se déconnecter"))
    await expect(signout).to_be_visible(timeout=WAIT_MS)


async def sign_out(page: Page) -> None:
    await page.get_by_role("button", name=re.compile("Sign out|Se déconnecter")).click()
    await expect(page.get_by_role("heading", name=re.compile("Sign in|Connexion"))).to_be_visible()


async def shoot(page: Page, name: str) -> list[Path]:
    """Save ``<name>-en.png`` and ``<name>-fr.png`` (switching language with the header button)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    saved = []
    first = await page.evaluate("document.documentElement.lang")
    for lang in (first, "fr" if first == "en" else "en"):
        if await page.evaluate("document.documentElement.lang") != lang:
            await page.locator("#lang").click()
            await expect(page.locator(f"html[lang={lang}]")).to_be_attached()
        await page.evaluate("window.scrollTo(0, 0)")
        path = SCREENSHOTS / f"{name}-{lang}.png"
        await page.screenshot(path=str(path), full_page=False, animations="disabled")
        saved.append(path)
    await page.locator("#lang").click()  # back to the language the page had
    await expect(page.locator(f"html[lang={first}]")).to_be_attached()
    return saved
