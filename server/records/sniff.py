"""What a document is, told by its first bytes (never by its name or declared type).

Accepted: PDF, PNG, JPEG, WebP, EDF/EDF+ and BDF/BDF+. :func:`media_type`
answers the media type or ``None`` (the upload is then refused with
``unsupported_media_type``). Pure: no I/O.
"""

from __future__ import annotations

#: Bytes a sniff needs at most (an EDF header's fixed part).
SNIFF_BYTES = 256


def _edf(head: bytes) -> bool:
    """An EDF header: version ``0`` and 7 spaces, printable ASCII fields, and the
    header length (bytes 184..191) a multiple of 256 counting one record per signal."""
    if len(head) < SNIFF_BYTES or head[:8] != b"0       ":
        return False
    if any(b < 0x20 or b > 0x7E for b in head[8:SNIFF_BYTES]):
        return False
    length, signals = head[184:192].strip(), head[252:256].strip()
    if not (length.isdigit() and signals.isdigit()):
        return False
    return int(length) == 256 * (int(signals) + 1)


def _bdf(head: bytes) -> bool:
    if len(head) < SNIFF_BYTES or head[:8] != b"\xffBIOSEMI":
        return False
    length, signals = head[184:192].strip(), head[252:256].strip()
    return length.isdigit() and signals.isdigit() and int(length) == 256 * (int(signals) + 1)


def media_type(head: bytes) -> str | None:
    """The media type of a content starting with ``head`` (at least :data:`SNIFF_BYTES`
    bytes when the content has them), or None when it is none we accept."""
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if _edf(head):
        return "application/edf"
    if _bdf(head):
        return "application/bdf"
    return None


#: File name extension of each accepted type (for downloads and exports).
EXTENSIONS = {
    "application/pdf": "pdf",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "application/edf": "edf",
    "application/bdf": "bdf",
}
