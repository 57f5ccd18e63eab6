"""Export a recording (finished or live) to EDF+ or BDF+ from the store.

The samples come from the stored chunks (decrypted page by page), the
metadata from the stream's newest metadata version, the annotations from the
annotation table: everything committed, so a recording whose hub was killed
exports with everything it acknowledged (the last ``eeg_persist_interval_s``
at most missing) and every annotation. The file is written by
:class:`media.eeg.edf.EdfExport` in a worker thread (pyedflib blocks), one
page of chunks at a time, so the event loop never waits on it.

An annotation's EDF+ text is its text, preceded by its kind unless the kind
is ``note`` (``eyes_closed``, ``photic 14 Hz: ...``); its onset and duration
are its sample indices divided by the rate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Connection

from media.eeg.edf import EdfExport
from protocol.eeg import FORMATS
from server.eeg import annotation_store, store
from server.security.crypto import Keyring
from server.store.db import Database

#: Sample bytes decrypted per page of chunks.
PAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Exported:
    """What an export wrote: file kind, samples per channel (gaps included), annotations."""

    path: str
    bdf: bool
    samples: int
    annotations: int
    gaps: int


def describe(a: annotation_store.Annotation) -> str:
    """The EDF+ text of an annotation (see the module docstring)."""
    if a.kind == "note":
        return a.text or "note"
    head = a.kind if a.frequency_hz is None else f"{a.kind} {a.frequency_hz:g} Hz"
    return f"{head}: {a.text}" if a.text else head


async def export_stream(db: Database, keys: Keyring, sid: str, path: str | Path) -> Exported:
    """Write stream ``sid`` to ``path`` (EDF+, or BDF+ when 16 bits cannot hold its range).

    Raises :class:`server.eeg.store.NotFound`, SQLAlchemy errors, ``CryptoError``,
    ``OSError`` (the file).
    """
    row = await db.run(lambda c: store.get_stream(c, sid), readonly=True)
    if row is None:
        raise store.NotFound(sid)
    exam = await db.run(lambda c: store.get_exam(c, keys, row.exam_id), readonly=True)
    meta = await db.run(lambda c: store.stream_meta(c, keys, sid, row.meta_version), readonly=True)
    notes = await db.run(lambda c: annotation_store.live_annotations(c, keys, sid), readonly=True)
    start = datetime.fromtimestamp(row.created_us / 1e6, tz=UTC)
    out = await asyncio.to_thread(
        EdfExport,
        path,
        meta,
        start,
        patient_code=exam.people.patient_id if exam else "",
        recording=f"medhub {sid}",
    )
    nch, dtype = len(meta.channels), np.dtype(FORMATS[meta.format][2])
    gaps = 0
    try:
        at, end = 0, row.durable_end
        while at < end:

            def page(c: Connection, a: int = at) -> list[store.Chunk]:
                return store.read_chunks(c, keys, sid, a, end, PAGE_BYTES)

            chunks = await db.run(page, readonly=True)
            if not chunks or chunks[-1].first + chunks[-1].count <= at:
                break
            for ch in chunks:
                lo = max(ch.first, at)
                if ch.first > at:
                    await asyncio.to_thread(out.gap, ch.first - at)
                    gaps += 1
                if ch.data is None:
                    await asyncio.to_thread(out.gap, ch.first + ch.count - lo)
                    gaps += 1
                else:
                    block = np.frombuffer(ch.data, dtype=dtype).reshape(ch.count, nch)
                    await asyncio.to_thread(out.write, block[lo - ch.first :])
                at = ch.first + ch.count
        for a in notes:
            out.annotate(a.onset / meta.rate, a.duration / meta.rate, describe(a))
    finally:
        await asyncio.to_thread(out.close)
    return Exported(str(path), out.bdf, out.samples, len(notes), gaps)
