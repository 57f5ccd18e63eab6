"""``medhub-eeg``: stream EEG to the hub, or follow a stream and write it to EDF+.

    medhub-eeg record --exam EXAM --synthetic [--channels 21 --rate 256 --seconds 60]
    medhub-eeg record --exam EXAM --edf recording.edf [--speed 1]   # a real file, its notes
    medhub-eeg record --exam EXAM --lsl EEG                          # a Lab Streaming Layer outlet
    medhub-eeg view --stream t-0000abcd --out received.edf [--seconds 30 | until it closes]

The session is the one ``medhub-chat login`` saved (``--profile NAME``, else
``$MEDHUB_PROFILE``, else "default"), or ``--token`` / ``$MEDHUB_TOKEN``; the
server is ``--server``, else ``$MEDHUB_SERVER``, else the profile's. Sockets
authenticate with a single-use ticket from the accounts API.

``record`` sends frames of 1/8 s in real time (``--speed`` to go faster),
keeps what the hub has not acknowledged, reconnects and resends by itself,
sends the file's annotations (or, for the synthetic source, an annotation at
each eyes-closed / eyes-open change) when the stream reaches them, and
closes the stream at the end (``--keep-open`` leaves it live). ``view``
watches the stream raw, fills what it missed, and writes what it holds to an
EDF+ (BDF+) file with the stream's annotations.

Exit codes: 0 ok; 1 refused by the hub (or the session has ended); 2 usage (or an
unreadable --edf file); 3 no connection.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np

from clients.eeg import EegError, Recorder, TicketAuth, TokenAuth
from clients.eeg_view import Viewer
from clients.errors import SessionEndedError
from media.eeg.edf import EdfExport, onset_samples, read_edf
from media.eeg.synth import SyntheticEeg

DEFAULT_SERVER = "http://127.0.0.1:8000"


def _ws_url(server: str) -> str:
    scheme, _, rest = server.rstrip("/").partition("://")
    return ("wss" if scheme == "https" else "ws") + "://" + rest + "/ws"


class _Ticket(TicketAuth):
    """A ticket, or EegError when the session has ended: a refusal, not retried for ever."""

    async def hello(self) -> dict[str, str]:
        try:
            return await super().hello()
        except SessionEndedError as exc:
            raise EegError(exc.code, "the session has ended: medhub-chat login again") from exc


def _session(args: argparse.Namespace) -> tuple[str, Any]:
    """The server and the ``hello`` credentials."""
    from clients import profiles

    token = args.token or os.environ.get("MEDHUB_TOKEN", "")
    server = args.server or os.environ.get("MEDHUB_SERVER", "")
    if not token:
        prof = profiles.load(args.profile or os.environ.get("MEDHUB_PROFILE") or profiles.DEFAULT)
        if prof is None or not prof.token:
            raise SystemExit("medhub-eeg: not signed in: medhub-chat login first, or --token")
        token, server = prof.token, server or prof.server
    server = server or DEFAULT_SERVER
    auth = TokenAuth(token) if args.no_ticket else _Ticket(server, token)
    return server, auth


async def record(args: argparse.Namespace) -> int:
    server, auth = _session(args)
    notes: list[tuple[int, str, str, int]] = []  # (onset sample, kind, text, duration)
    if args.edf:
        try:
            rec_file = read_edf(args.edf)
        except (OSError, ValueError) as exc:  # not "no connection": nothing was sent
            print(f"medhub-eeg: cannot read {args.edf}: {exc}", file=sys.stderr)
            return 2
        meta, samples = rec_file.meta, rec_file.samples
        notes = sorted(
            (
                onset_samples(a.onset_s, meta.rate),
                "note",
                a.text,
                onset_samples(a.duration_s, meta.rate),
            )
            for a in rec_file.annotations
        )
        source: Any = None
    elif args.lsl:
        from media.eeg.lsl import open_lsl

        source = open_lsl(args.lsl)
        meta, samples = source.meta, None
    else:
        source = SyntheticEeg(args.channels, args.rate, args.format, seed=args.seed)
        meta, samples = source.meta, None
    rec = Recorder(_ws_url(server), auth, args.exam, meta, binary=True)
    sid = await rec.start()
    print(
        f"streaming {sid} ({len(meta.channels)} channels, {meta.rate} Hz, {meta.format})",
        flush=True,  # a pipe or a log sees the stream id now, not when the recording ends
    )
    step = max(1, meta.rate // 8)
    total = samples.shape[0] if samples is not None else int(args.seconds * meta.rate)
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent_events = 0
    at = 0
    while at < total:
        n = min(step, total - at)
        block = samples[at : at + n] if samples is not None else source.read(n)
        await rec.write(block)
        at += n
        if isinstance(source, SyntheticEeg) and args.annotate_events:
            for onset, kind in source.events[sent_events:]:
                notes.append((onset, kind, kind.replace("_", " "), 0))
            sent_events = len(source.events)
        while notes and notes[0][0] < at:
            onset, kind, text, duration = notes.pop(0)
            await rec.annotate(onset, text, kind=kind, duration=duration)
        if args.speed > 0 and not args.lsl:  # an LSL outlet paces itself
            delay = started + at / meta.rate / max(args.speed, 1e-9) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
    if args.keep_open:
        await rec.wait_acked()
        await rec.stop()
        print(f"{sid}: {at} samples stored; left open")
    else:
        end = await rec.close()
        print(f"{sid}: closed at sample {end}")
    return 0


def _describe(note: dict[str, Any]) -> str:
    """An annotation's EDF+ text, as ``medhub eeg export`` writes it: its kind first."""
    kind, text, hz = note.get("kind", "note"), note.get("text", ""), note.get("frequency_hz")
    if kind == "note":
        return str(text or "note")
    head = kind if hz is None else f"{kind} {hz:g} Hz"
    return f"{head}: {text}" if text else str(head)


async def view(args: argparse.Namespace) -> int:
    server, auth = _session(args)
    v = Viewer(_ws_url(server), auth, args.stream, backfill_s=args.backfill_s)
    await v.start()
    assert v.meta is not None
    assert v.floor is not None
    rate = v.meta.rate
    # the viewer starts no lower than the hub's buffer (its last eeg_ring_seconds); the
    # store holds the rest of the recording: all of --backfill-s is asked for
    v.floor = min(v.floor, max(0, v.live_end - int(args.backfill_s * rate)))
    if args.seconds is not None:
        target = v.live_end + int(args.seconds * rate)
        await v.wait_until(target, timeout_s=args.seconds + 60)
    else:
        await v.wait_for(lambda: v.closed_end is not None, timeout_s=10 * 24 * 3600)
        assert v.closed_end is not None
        target = v.closed_end
        await v.wait_until(target, timeout_s=120)
    floor = v.floor or 0
    print(f"held {target - floor} samples from {floor}; duplicates {v.duplicates}")
    if args.out:
        out = EdfExport(args.out, v.meta, datetime.now(UTC), recording=f"medhub {args.stream}")
        at = floor  # the file starts at the floor; gaps of the recording keep their length
        for a, b in v.cov.intervals():
            a, b = max(a, floor), min(b, target)
            if b > a:
                out.gap(a - at)
                out.write(np.asarray(v.data(a, b)))
                at = b
        out.gap(target - at)
        for note in v.annotations.values():
            if floor <= note["onset"] < target:  # an earlier one is not in this file
                onset_s, duration_s = (note["onset"] - floor) / rate, note["duration"] / rate
                out.annotate(onset_s, duration_s, _describe(note))
        out.close()
        print(f"wrote {args.out}")
    await v.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medhub-eeg", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", help="hub URL (default: $MEDHUB_SERVER or the profile's)")
    parser.add_argument("--profile", help="saved session of medhub-chat login")
    parser.add_argument("--token", help="a bearer session token instead of a profile")
    parser.add_argument("--no-ticket", action="store_true", help="send the token in hello")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("record", help="stream a source to an exam")
    r.add_argument("--exam", required=True)
    src = r.add_mutually_exclusive_group()
    src.add_argument("--synthetic", action="store_true", help="the synthetic EEG (default)")
    src.add_argument("--edf", help="an EDF/BDF(+) file (its annotations too)")
    src.add_argument("--lsl", metavar="TYPE", help="an LSL outlet of this type (pylsl)")
    r.add_argument("--channels", type=int, default=21)
    r.add_argument("--rate", type=int, default=256)
    r.add_argument("--format", choices=["int16", "int32", "float32"], default="int16")
    r.add_argument("--seconds", type=float, default=60.0, help="synthetic/LSL: how long")
    r.add_argument("--speed", type=float, default=1.0, help="x real time (0: as fast as possible)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--annotate-events", action="store_true", help="synthetic: eyes events")
    r.add_argument("--keep-open", action="store_true", help="do not close the stream at the end")
    r.set_defaults(func=record)
    v = sub.add_parser("view", help="follow a stream; write what arrived to EDF+")
    v.add_argument("--stream", required=True)
    v.add_argument("--seconds", type=float, help="follow this long (default: until it closes)")
    v.add_argument("--backfill-s", type=float, default=600.0)
    v.add_argument("--out", help="EDF+ file to write")
    v.set_defaults(func=view)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medhub-eeg`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(asyncio.run(args.func(args)))
    except EegError as exc:
        print(f"medhub-eeg: refused: {exc}", file=sys.stderr)
        return 1
    except (OSError, TimeoutError) as exc:
        print(f"medhub-eeg: no connection: {exc or 'no answer in time'}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
