"""Video calls in the browser app: Chromium with a fake camera and microphone, for real.

Each test plays one scenario of this module in a process of its own, inside a
private network namespace that has only ``lo`` (``unshare --map-root-user
--net``, ../shared/webrtc-testing.md): a hub serving the app, Chromium, and what
the scenario needs beside them (the ``medhub-call echo`` process, a coturn).
The pages' peer connections are watched through ``getStats()`` (an init script
keeps each ``RTCPeerConnection`` the page makes), independently of what the
app shows.

- ``consultation``: a patient (two devices) and a practitioner in their
  consultation; the call rings on both devices of the patient, one answers, the
  other says "answered on another device"; video flows both ways; mute and
  camera off are seen on the other side; the chat beside the video; the
  patient's socket drops and the call says "reconnecting", then goes on; hang up
  with the reason on both sides; the hub's record of the call.
- ``echo``: the patient's camera, microphone and network check calls the
  aiortc echo service and reports round-trip figures.
- ``relay``: both sides choose "always relay": the call goes through coturn
  with credentials minted by the hub (relay candidates on both ends).

Screenshots (English and French) of the room, the incoming call and the check
go to docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from server.calls import records
from server.policy import Relationship
from tests.accountstest import CHEAP
from tests.browser.webtest import (
    PHONE,
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
from tests.calls.coturn import start_coturn
from tests.calls.test_echo_account import config_file
from tests.hubtest import RunningHub, hub_settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: WebRTC flags (shared/webrtc-testing.md): loopback candidates, fake devices, no prompt.
CALL_ARGS = [
    "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
CALL_MS = 20_000  # a call to connect, a check to finish (2 cores, Chromium x3)
SCENARIO_S = 120
TURN_SECRET = "browser-turn-secret-0123456789"

#: Keeps every RTCPeerConnection a page makes, for the checks below (not the app's view),
#: and counts the video frames its open connections decoded (``__frames``, from getStats).
PC_SPY = """(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.__frames = 0;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
  setInterval(async () => {
    let n = 0;
    for (const pc of window.__pcs) {
      if (pc.connectionState === "closed") continue;
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") n += s.framesDecoded || 0;
      });
    }
    window.__frames = n;
  }, 100);
})();"""
#: The candidate types (local, remote) of the pair in use, per open peer connection, and
#: the ICE server the local candidate came from.
PAIRS_JS = """async () => {
  const out = [];
  for (const pc of window.__pcs || []) {
    if (pc.connectionState === "closed") continue;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== "transport" || !s.selectedCandidatePairId) return;
      const pair = report.get(s.selectedCandidatePairId);
      const local = report.get(pair.localCandidateId);
      out.push([local.candidateType, report.get(pair.remoteCandidateId).candidateType,
                local.url || null]);
    });
  }
  return out;
}"""


# -- running a scenario inside the namespace ---------------------------------------------------
def run_scenario(name: str, workdir: Path) -> dict[str, Any]:
    """Run scenario ``name`` in a loopback-only network namespace; its findings (JSON)."""
    command = [
        "unshare", "--map-root-user", "--net", "sh", "-c", 'ip link set lo up && exec "$@"',
        "sh", sys.executable, "-m", "tests.browser.test_calls", name, str(workdir),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, timeout=SCENARIO_S + 30, check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8"},
    )  # fmt: skip
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 0, err[-6000:]
    lines = done.stdout.decode().strip().splitlines()
    assert lines, err[-6000:]
    found: dict[str, Any] = json.loads(lines[-1])
    return found


# -- the people and the pages --------------------------------------------------------------------
async def clinic(hub: RunningHub, ref: str) -> tuple[Person, Person]:
    """A practitioner and a patient of one organisation, with a consultation ``ref``."""
    org = await new_org(hub, "Clinique des Lilas")
    claire = await enrolled(hub, org, "practitioner", "Dr Claire Martin", "claire@lilas.example")
    paul = await enrolled(hub, org, "patient", "Paul Durand", "paul@lilas.example")
    rel = Relationship("consultation", claire.user_id, paul.user_id, ref)
    await hub.components.accounts.admin.add_care(None, rel)
    return claire, paul


async def device(
    b: Browsers, person: Person, who: str, *, recovery: bool = False, **kw: Any
) -> Page:
    """A signed-in page of ``person`` on a device of its own, its peer connections watched
    (``recovery``: signed in with a recovery code, as each TOTP step is accepted once)."""
    page = await b.page(who, **kw)
    await page.add_init_script(PC_SPY)
    await open_app(page)
    await sign_in(page, person, recovery=recovery)
    return page


async def open_room(page: Page, ref: str, other: str) -> str:
    """From the home: open the consultation ``ref``, then its room; the conversation id."""
    await page.get_by_label("Consultation reference").fill(ref)
    await page.get_by_role("button", name="Open the consultation conversation").click()
    await expect(page.locator(".conversation h1")).to_contain_text(other, timeout=WAIT_MS)
    await page.get_by_role("link", name="Video call").click()
    title = page.get_by_role("heading", name=f"Video consultation with {other}")
    await expect(title).to_be_visible(timeout=WAIT_MS)
    return page.url.rsplit("/", 1)[1]


async def frames(page: Page) -> int:
    """Video frames decoded so far by the page's open peer connections."""
    return int(await page.evaluate("window.__frames"))


async def frames_above(page: Page, n: int) -> None:
    """Wait until the page's open connections decoded more than ``n`` video frames."""
    await page.wait_for_function("(n) => window.__frames > n", arg=n, polling=100, timeout=CALL_MS)


#: Records each state the room shows, with its status line (a state may last a few ms).
WATCH_ROOM = """() => {
  window.__seen = [];
  const room = document.querySelector(".room");
  const status = room.querySelector(".call-status");
  const note = () => window.__seen.push(`${room.dataset.state}|${status.textContent}`);
  new MutationObserver(note).observe(room, { attributes: true, childList: true, subtree: true });
}"""


async def connected(page: Page) -> None:
    room = page.locator(".room")
    await expect(room).to_have_attribute("data-state", "connected", timeout=CALL_MS)


async def call_record(hub: RunningHub, conv: str) -> dict[str, Any]:
    """The newest call of ``conv`` as recorded by the hub, with its quality reports."""
    rows = await hub.components.database.run(
        lambda conn: records.of_conversation(conn, conv, limit=1), readonly=True
    )
    assert rows, "no call recorded"
    found = await hub.components.database.run(
        lambda conn: records.get(conn, rows[0]["call"]), readonly=True
    )
    assert found is not None
    return found


# -- scenarios -----------------------------------------------------------------------------------
async def consultation(work: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    async with (
        web_hub(work / "hub", calls_grace_s=15.0) as hub,
        chromium(hub.http, CALL_ARGS) as b,
    ):
        claire, paul = await clinic(hub, "consult-7")
        pp = await device(b, claire, "practitioner")
        pq = await device(b, paul, "patient")
        pq2 = await device(b, paul, "patient's phone", recovery=True, viewport=PHONE)
        conv = await open_room(pp, "consult-7", "Paul Durand")
        await expect(pp.locator(".room-peer .presence")).to_have_attribute("data-state", "online")
        # the patient reads the consultation's conversation on one device, the home on the other
        await pq.locator(".convs a", has_text="Dr Claire Martin").click()
        await expect(pq.locator(".conversation h1")).to_contain_text("Dr Claire Martin")

        # -- the practitioner calls: both devices of the patient ring --
        await pp.get_by_role("button", name="Start the video call").click()
        await expect(pp.locator(".call-status")).to_have_text(
            "Calling Paul Durand…", timeout=WAIT_MS
        )
        for page in (pq, pq2):
            ring = page.get_by_role("alertdialog", name="Incoming video call")
            await expect(ring).to_contain_text("Dr Claire Martin is calling you.", timeout=WAIT_MS)
        await shoot(pq, "call-incoming")
        await pq.get_by_role("button", name="Answer").click()
        await expect(pq2.get_by_role("alertdialog")).to_contain_text(
            "Answered on another device.", timeout=WAIT_MS
        )
        await expect(pq2.get_by_role("button", name="Answer")).to_have_count(0)

        # -- connected: video both ways, read from each page's getStats --
        await connected(pp)
        await connected(pq)
        await frames_above(pp, 10)
        await frames_above(pq, 10)
        found["frames"] = [await frames(pp), await frames(pq)]
        await expect(pp.locator(".room-peer .presence")).to_have_attribute(
            "data-state", "in-call", timeout=WAIT_MS
        )

        # -- the chat beside the video --
        await pp.get_by_label("Message", exact=True).fill("Je vous vois bien, et vous ?")
        await pp.get_by_label("Message", exact=True).press("Enter")
        await expect(pq.locator(".room-chat .msg .text").last).to_have_text(
            "Je vous vois bien, et vous ?", timeout=WAIT_MS
        )

        # -- microphone and camera off, seen on the other side --
        await pp.get_by_role("button", name="Mute my microphone").click()
        await expect(pp.get_by_role("button", name="Unmute my microphone")).to_have_attribute(
            "aria-pressed", "true"
        )
        await expect(pq.locator(".peer-media")).to_have_text(
            "Dr Claire Martin muted their microphone.", timeout=WAIT_MS
        )
        await pq.get_by_role("button", name="Turn my camera off").click()
        await expect(pp.locator(".remote-off")).to_have_text(
            "Paul Durand turned their camera off.", timeout=WAIT_MS
        )
        await pq.get_by_role("button", name="Turn my camera on").click()
        await expect(pp.locator(".remote-off")).to_be_hidden(timeout=WAIT_MS)
        await pp.get_by_role("button", name="Unmute my microphone").click()
        await expect(pq.locator(".peer-media")).to_have_text("", timeout=WAIT_MS)
        await shoot(pp, "call-room")

        # -- the patient's socket drops: "reconnecting" on the other side, then it goes on --
        before = await frames(pp)
        await pp.evaluate(WATCH_ROOM)
        assert hub.components.hub.close_user(paul.user_id, 1011, "test") >= 1
        await pp.wait_for_function(
            """() => window.__seen.some((s) => s.startsWith("reconnecting|")
                 && s.includes("Paul Durand's connection dropped"))""",
            polling=100, timeout=WAIT_MS,
        )  # fmt: skip
        await connected(pp)
        await connected(pq)
        await frames_above(pp, before + 10)

        # -- the patient reloads the page: it takes its place in the call again --
        pq.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))  # "leave the page?"
        await pq.reload()
        await connected(pq)
        await frames_above(pq, 10)  # its new connection's frames
        await frames_above(pp, await frames(pp) + 10)

        # -- hang up: the reason on both sides --
        await pp.get_by_role("button", name="Hang up").click()
        await expect(pp.locator(".call-status")).to_have_text("You hung up. The call has ended.")
        await expect(pq.locator(".call-status")).to_have_text(
            "Dr Claire Martin hung up. The call has ended.", timeout=WAIT_MS
        )
        await expect(pq.get_by_role("button", name="Call again")).to_be_visible()
        record = await call_record(hub, conv)
        found["record"] = {k: record[k] for k in ("caller", "callee", "reason", "ended_by")}
        found["answered"] = record["answered_ms"] is not None
        found["quality_reports"] = sum(len(v) for v in (record.get("quality") or {}).values())
        found["people"] = {"claire": claire.user_id, "paul": paul.user_id}
    return found


@contextlib.asynccontextmanager
async def echo_service(hub: RunningHub, creds: Path) -> AsyncIterator[None]:
    """``medhub-call echo`` beside the hub (as ``make run`` starts it), until the block ends."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients.cli_call", "--server", hub.http, "--loopback",
        "--credentials", str(creds), "echo",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stderr.readline(), 60)
        assert b"ready" in line, line
        yield
    finally:
        proc.terminate()
        await proc.wait()


async def echo(work: Path) -> dict[str, Any]:
    from server.cli import main as medhub

    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    data = work / "hub"
    creds = work / "echo-peer.json"
    config = config_file(work, hub_settings(data, **CHEAP))
    args = ["--config", str(config), "calls", "echo-account", "--credentials", str(creds)]
    assert await asyncio.to_thread(medhub, args) == 0
    echo_id = json.loads(creds.read_text())["user_id"]
    found: dict[str, Any] = {}
    async with (
        web_hub(data, calls_echo_users=[echo_id]) as hub,
        echo_service(hub, creds),
        chromium(hub.http, CALL_ARGS) as b,
    ):
        _, paul = await clinic(hub, "consult-8")
        page = await device(b, paul, "patient")
        await page.get_by_role("link", name="Test my camera, microphone and network").click()
        check = page.locator(".precheck")
        await expect(check.get_by_role("heading")).to_have_text(
            "Test your camera, microphone and network"
        )
        await page.get_by_role("button", name="Start the test").click()
        await expect(check).to_have_attribute("data-result", "ok", timeout=CALL_MS)
        await expect(check.get_by_role("status")).to_have_text(
            "Everything works: you are ready for your video consultation."
        )
        for item in ("camera", "microphone", "network"):
            result = check.locator(f"[data-check={item}]")
            await expect(result).to_have_attribute("data-result", "ok")
        figures = {
            name: await check.locator(f"[data-figure={name}]").inner_text()
            for name in ("connect", "path", "rtt", "channel", "frames")
        }
        found["figures"] = figures
        await shoot(page, "call-check")
    return found


async def relay(work: Path) -> dict[str, Any]:
    turn = start_coturn(work / "turn", TURN_SECRET, (41000, 41199))
    found: dict[str, Any] = {}
    try:
        async with (
            web_hub(work / "hub", calls_turn_urls=[turn.url], secret_turn=TURN_SECRET) as hub,
            chromium(hub.http, CALL_ARGS) as b,
        ):
            claire, paul = await clinic(hub, "consult-9")
            pp = await device(b, claire, "practitioner")
            pq = await device(b, paul, "patient")
            for page in (pp, pq):  # each chooses "always relay" on the check page
                await page.goto("/#/check")
                box = page.get_by_label(re.compile("Always relay my calls"))
                await expect(box).to_be_enabled(timeout=WAIT_MS)
                await box.check()
                await page.goto("/#/")
            await open_room(pp, "consult-9", "Paul Durand")
            await pp.get_by_role("button", name="Start the video call").click()
            await pq.get_by_role("button", name="Answer").click(timeout=WAIT_MS)
            await connected(pp)
            await connected(pq)
            await frames_above(pp, 10)
            await frames_above(pq, 10)
            found["pairs"] = [await pp.evaluate(PAIRS_JS), await pq.evaluate(PAIRS_JS)]
            await pp.locator(".call-details summary").click()
            await expect(pp.locator(".call-figures")).to_contain_text(
                "Relayed through the medhub server", timeout=WAIT_MS
            )
            await pq.get_by_role("button", name="Hang up").click()
            await expect(pp.locator(".call-status")).to_have_text(
                "Paul Durand hung up. The call has ended.", timeout=WAIT_MS
            )
        found["turn"] = turn.url
    finally:
        turn.stop()
    return found


SCENARIOS: dict[str, Callable[[Path], Awaitable[dict[str, Any]]]] = {
    "consultation": consultation,
    "echo": echo,
    "relay": relay,
}


# -- the tests -----------------------------------------------------------------------------------
def test_consultation_call_rings_every_device_connects_and_hangs_up(tmp_path: Path) -> None:
    found = run_scenario("consultation", tmp_path)
    assert min(found["frames"]) > 10
    people = found["people"]
    assert found["record"] == {
        "caller": people["claire"], "callee": people["paul"], "reason": "user_hangup",
        "ended_by": people["claire"],
    }  # fmt: skip
    assert found["answered"]
    assert found["quality_reports"] >= 1  # the pages reported their getStats figures


def test_precall_check_against_the_echo_service_reports_round_trips(tmp_path: Path) -> None:
    figures = run_scenario("echo", tmp_path)["figures"]
    for name in ("connect", "rtt", "channel"):
        assert re.fullmatch(r"\d+ ms", figures[name]), figures
    assert figures["path"] == "Direct"
    sent, back = map(int, re.findall(r"\d+", figures["frames"]))
    assert back >= 10, figures  # my video came back from the echo service
    assert sent >= back, figures


def test_call_relayed_through_coturn_with_credentials_from_the_hub(tmp_path: Path) -> None:
    found = run_scenario("relay", tmp_path)
    # relay candidates on both ends, from the hub's TURN server (the hub-minted
    # credential was accepted: coturn refuses any other, tests/calls/test_e2e.py)
    relayed = ["relay", "relay", found["turn"]]
    assert found["pairs"] == [[relayed], [relayed]]


# -- inside the namespace ----------------------------------------------------------------------
async def _main(name: str, workdir: Path) -> None:
    try:
        found = await asyncio.wait_for(SCENARIOS[name](workdir), SCENARIO_S)
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    print(json.dumps(found, default=str), flush=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], Path(sys.argv[2])))
