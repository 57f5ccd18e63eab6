"""``medhub-call``: aiortc call participants from the command line (support staff, echo service).

Commands::

    medhub-call dial --echo                 # a test call with the echo service: camera,
                                            # microphone and network check, round-trip figures
    medhub-call dial --conv CONV [--to USER] [--seconds 30] [--relay-only] [--file clip.mp4]
    medhub-call answer [--timeout 60]       # answer the next call ringing for me
    medhub-call ice                         # the STUN/TURN servers the hub hands me
    medhub-call echo --credentials var/echo-peer.json [--capacity 4]   # the echo service

Who signs in: ``--token`` (or ``MEDHUB_TOKEN``), else the saved ``medhub-chat``
session (``--profile``), else, for the echo service, ``--credentials``: the
service account's file written by ``medhub calls echo-account`` (on first run
the echo service accepts its invitation, sets a random password and enrols
TOTP, and keeps both in that file, mode 0600).

``dial`` and ``answer`` print a summary (``--json``: one JSON line): connected
or not, time to connect, video and audio frames received, data-channel and
(echo) media round trips, the candidate types in use, and quality figures
(also reported to the hub). Exit status: 0 when media flowed both ways, 1
otherwise, 2 for a usage or sign-in error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyotp

from clients import profiles
from clients.accounts import accept_invitation, confirm_enrolment, sign_in
from clients.call_peer import Summary, answer, dial, fill, measure, serve_echo
from clients.calls import Calls
from clients.errors import MedhubError, SessionEndedError, SignInError, TransportError
from clients.sdk import MedhubClient
from media.peer import MediaPeer, use_loopback_only

DEFAULT_SERVER = "http://127.0.0.1:8000"


class UsageError(Exception):
    """Bad arguments or no way to sign in (exit status 2)."""


# -- signing in --------------------------------------------------------------------------------
def _write_private(path: Path, data: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    return data


async def service_token(server: str, path: Path) -> str:
    """A session token for the service account of ``path`` (enrolling it on first use).

    A TOTP code is accepted once: the file keeps the last time step used, and
    a sign-in within the same step uses the next one (the hub accepts one step
    of drift). Raises :class:`SignInError`, :class:`TransportError`,
    :class:`UsageError`.
    """
    creds = _read_json(path)
    if "password" not in creds:
        if "invitation" not in creds:
            raise UsageError(f"{path} holds neither an invitation nor a password")
        # hex cannot spell the account's name or email words ("echo", "test", "call"):
        # the password policy refuses passwords containing them
        password = "Q!" + secrets.token_hex(16)
        enrolment = await accept_invitation(server, str(creds["invitation"]), password)
        query = urllib.parse.urlparse(enrolment.otpauth_uri).query
        secret = urllib.parse.parse_qs(query)["secret"][0]
        totp = pyotp.TOTP(secret)
        step = int(time.time() // totp.interval)
        session, recovery = await confirm_enrolment(
            server, enrolment.challenge, totp.generate_otp(step)
        )
        creds.pop("invitation", None)
        creds.update(
            password=password, totp_secret=secret, recovery_codes=recovery, totp_last_step=step
        )
        _write_private(path, creds)
        return session.token
    totp = pyotp.TOTP(str(creds["totp_secret"]))
    step = int(time.time() // totp.interval)
    last = int(creds.get("totp_last_step", -1))
    while step <= last - 1:  # two sign-ins ahead already: wait for time to catch up
        await asyncio.sleep(totp.interval - time.time() % totp.interval + 0.1)
        step = int(time.time() // totp.interval)
    step = max(step, last + 1)
    session = await sign_in(
        server, str(creds["email"]), str(creds["password"]), totp.generate_otp(step)
    )
    creds["totp_last_step"] = step
    _write_private(path, creds)
    return session.token


def _profile_of(args: argparse.Namespace) -> profiles.Profile | None:
    name = args.profile or os.environ.get("MEDHUB_PROFILE") or profiles.DEFAULT
    return profiles.load(name)


def server_and_token(args: argparse.Namespace) -> tuple[str, str | None]:
    """The server URL and the bearer token to use (None: sign in with --credentials)."""
    token = args.token or os.environ.get("MEDHUB_TOKEN")
    profile = None if token or args.credentials else _profile_of(args)
    server = args.server or (profile.server if profile else "") or DEFAULT_SERVER
    if token is None and profile is not None and profile.token:
        token = profile.token
    if token is None and not args.credentials:
        raise UsageError("sign in first (medhub-chat login), or pass --token / --credentials")
    return server, token


async def connected_client(args: argparse.Namespace) -> tuple[MedhubClient, Calls]:
    """A connected client and its call API."""
    server, token = server_and_token(args)
    if token is None:
        token = await service_token(server, Path(args.credentials))
    client = MedhubClient(server, token=token, use_ticket=False)
    calls = Calls(client)
    await client.connect(timeout_s=args.timeout)
    return client, calls


# -- commands ------------------------------------------------------------------------------------
def _peer(args: argparse.Namespace, servers: list[dict[str, Any]], echo: bool) -> MediaPeer:
    return MediaPeer(
        servers, relay_only=args.relay_only, media_file=args.file, echo_test=echo,
        video=not args.audio_only,
    )  # fmt: skip


def _report(args: argparse.Namespace, summary: Summary) -> int:
    if args.json:
        print(summary.json(), flush=True)
    else:
        for key, value in json.loads(summary.json()).items():
            if value not in (None, {}, []):
                print(f"{key}: {value}")
    ok = summary.connected and summary.video_frames > 0 and summary.error is None
    return 0 if ok or (args.audio_only and summary.connected) else 1


async def _dial(args: argparse.Namespace) -> int:
    if not args.echo and not args.conv:
        raise UsageError("dial needs --conv (and --to in a group) or --echo")
    client, calls = await connected_client(args)
    summary = Summary(role="caller")
    peer = _peer(args, await calls.ice_servers(), args.echo)
    call = None
    try:
        call, pump, started = await dial(
            calls, peer, conv=args.conv, to=args.to, echo=args.echo, trickle=not args.no_trickle,
            answer_timeout_s=args.timeout,
        )  # fmt: skip
        summary.call = call.id
        await measure(
            call, peer, summary, started=started, frames=args.frames, pings=args.pings,
            timeout_s=args.timeout,
        )  # fmt: skip
        if args.echo and peer.channel is not None:
            peer.channel.send("stats")  # the echo's own view: frames, its RTCP round trip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(peer.stats_received.wait(), 5.0)
        await asyncio.sleep(args.seconds)
        with contextlib.suppress(TimeoutError):
            await peer.finish(timeout_s=5.0)
        fill(summary, peer)
        await call.hangup()
        summary.end_reason = await call.ended(args.timeout)
        pump.cancel()
    except (MedhubError, TimeoutError) as exc:
        summary.error = f"{type(exc).__name__}: {exc}"
        if call is not None and call.state != "ended":
            with contextlib.suppress(MedhubError):
                await call.hangup("ice_failed" if not summary.connected else "error")
    finally:
        await peer.close()
        await client.close()
    return _report(args, summary)


async def _answer(args: argparse.Namespace) -> int:
    client, calls = await connected_client(args)
    summary = Summary(role="callee")
    peer: MediaPeer | None = None
    try:
        ring = await calls.incoming(args.timeout)
        started = time.monotonic()
        summary.call = ring.id
        peer = _peer(args, await calls.ice_servers(), False)
        pump = await answer(ring, peer, trickle=not args.no_trickle)
        await measure(
            ring, peer, summary, started=started, frames=args.frames, pings=args.pings,
            timeout_s=args.timeout,
        )  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await peer.finish(timeout_s=5.0)
        fill(summary, peer)
        summary.end_reason = await ring.ended(args.timeout + args.seconds)
        pump.cancel()
    except (MedhubError, TimeoutError) as exc:
        summary.error = f"{type(exc).__name__}: {exc}"
    finally:
        if peer is not None:
            await peer.close()
        await client.close()
    return _report(args, summary)


async def _ice(args: argparse.Namespace) -> int:
    client, calls = await connected_client(args)
    try:
        servers = await calls.ice_servers()
    finally:
        await client.close()
    for s in servers:
        user = s.get("username")
        expires = f" (TURN credential until {time.ctime(int(user.split(':')[0]))})" if user else ""
        print(", ".join(s["urls"]) + expires)  # never the credential itself
    if not servers:
        print("no STUN/TURN server configured: host candidates only")
    return 0


async def _echo(args: argparse.Namespace) -> int:
    """The echo service: sign in, answer test calls; sign in again when the session ends."""
    delay = 1.0
    while True:
        try:
            client, calls = await connected_client(args)
        except (TransportError, SignInError) as exc:  # the hub is not up yet, or refused
            if isinstance(exc, SignInError) and not exc.retryable:
                print(f"medhub-call echo: sign-in refused: {exc.code}", file=sys.stderr)
                return 2
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
            continue
        delay = 1.0
        print("medhub-call echo: ready", file=sys.stderr, flush=True)
        service = asyncio.get_running_loop().create_task(
            serve_echo(calls, capacity=args.capacity, relay_only=args.relay_only)
        )
        try:
            async for _ in client.events():  # ends with SessionEndedError: sign in again
                pass
        except SessionEndedError:
            pass
        finally:
            service.cancel()
            await client.close()
        if not args.credentials:
            return 2  # a token cannot be renewed here


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``medhub-call``."""
    parser = argparse.ArgumentParser(prog="medhub-call", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", help=f"hub URL (default: the profile's, or {DEFAULT_SERVER})")
    parser.add_argument("--profile", help="saved medhub-chat session to use")
    parser.add_argument("--token", help="bearer session token (else MEDHUB_TOKEN)")
    parser.add_argument("--credentials", help="service account file (the echo service)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per step (30)")
    parser.add_argument("--relay-only", action="store_true", help="TURN relays only")
    parser.add_argument(
        "--loopback", action="store_true", help="offer 127.0.0.1 only (tests, one-machine setups)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("dial", "place a call"), ("answer", "answer the next ringing call")):
        p = sub.add_parser(name, help=text)
        if name == "dial":
            p.add_argument("--conv", help="conversation to call in")
            p.add_argument("--to", help="whom (when the conversation has several others)")
            p.add_argument("--echo", action="store_true", help="test call with the echo service")
        p.add_argument("--file", help="play this media file instead of the test pattern")
        p.add_argument("--audio-only", action="store_true", help="no video")
        p.add_argument("--frames", type=int, default=30, help="video frames to wait for (30)")
        p.add_argument("--pings", type=int, default=5, help="data-channel round trips (5)")
        p.add_argument("--seconds", type=float, default=0.0, help="stay this long after checks")
        p.add_argument("--no-trickle", action="store_true", help="candidates inside the SDP")
        p.add_argument("--json", action="store_true", help="one JSON line")
        p.set_defaults(func=_dial if name == "dial" else _answer)
    p = sub.add_parser("ice", help="the STUN/TURN servers the hub hands me")
    p.set_defaults(func=_ice)
    p = sub.add_parser("echo", help="run the test-call echo service")
    p.add_argument("--capacity", type=int, default=4, help="calls at once (4)")
    p.set_defaults(func=_echo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medhub-call`` console script."""
    args = build_parser().parse_args(argv)
    if args.loopback:
        use_loopback_only()
    try:
        return int(asyncio.run(args.func(args)))
    except UsageError as exc:
        print(f"medhub-call: {exc}", file=sys.stderr)
        return 2
    except (SignInError, SessionEndedError) as exc:
        print(f"medhub-call: sign-in refused: {getattr(exc, 'code', exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
