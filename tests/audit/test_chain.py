"""The pure chain: encoding, tags, checkpoints and verification, without a loop or a DB."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.audit import chain
from server.audit.chain import BreakKind, CheckpointKind, Entry
from tests.audit.util import broken_at

KEY = b"k" * 32
OTHER = b"x" * 32
RING = {"k1": KEY}


def make_chain(
    n: int, key: bytes = KEY, start: int = 1, prev: bytes = chain.GENESIS_TAG
) -> list[Entry]:
    out: list[Entry] = []
    for seq in range(start, start + n):
        e = Entry(seq, 1_700_000_000_000_000 + seq, "node-a", f"u-{seq}", None, "doctor",
                  "org-1", "read", "record", f"r-{seq}", "ok", None, "10.0.0.1", f"q-{seq}",
                  "k1")  # fmt: skip
        prev = (e := chain.seal(key, prev, e)).tag
        out.append(e)
    return out


def test_canonical_is_a_fixed_order_json_array() -> None:
    e = make_chain(1)[0]
    assert chain.canonical(e) == (
        b'[1,1700000000000001,"node-a","u-1",null,"doctor","org-1","read","record","r-1",'
        b'"ok",null,"10.0.0.1","q-1","k1"]'
    )


def test_tag_is_hmac_over_prev_seq_and_body() -> None:
    import hashlib
    import hmac

    e = make_chain(1)[0]
    msg = chain.GENESIS_TAG + (1).to_bytes(8, "big") + chain.canonical(e)
    assert e.tag == hmac.new(KEY, msg, hashlib.sha256).digest()


def test_intact_chain_verifies() -> None:
    entries = make_chain(20)
    result = chain.verify(entries, RING, head_seq=20)
    assert broken_at(result) is None
    assert (result.checked, result.first_seq, result.last_seq) == (20, 1, 20)


def test_empty_chain_verifies() -> None:
    assert chain.verify([], RING, head_seq=0).ok


def test_field_change_breaks_at_that_seq() -> None:
    entries = make_chain(10)
    entries[6] = entries[6]._replace(actor="u-999")
    assert broken_at(chain.verify(entries, RING)) == (7, BreakKind.BAD_TAG)


def test_deleted_entry_is_a_gap() -> None:
    entries = make_chain(10)
    del entries[3]
    assert broken_at(chain.verify(entries, RING)) == (4, BreakKind.GAP)


def test_reordered_entries_break_at_the_first_swapped_seq() -> None:
    entries = make_chain(10)
    a, b = entries[2], entries[7]
    entries[2] = b._replace(seq=3)
    entries[7] = a._replace(seq=8)
    assert broken_at(chain.verify(entries, RING)) == (3, BreakKind.BAD_TAG)


def test_truncated_tail_detected_by_checkpoint_and_by_head() -> None:
    entries = make_chain(10)
    cp = chain.sign_checkpoint(KEY, "k1", CheckpointKind.CHECKPOINT, 10, entries[9].tag, 5, "n")
    assert broken_at(chain.verify(entries[:7], RING, checkpoints=[cp])) == (8, BreakKind.TRUNCATED)
    assert broken_at(chain.verify(entries[:7], RING, head_seq=10)) == (8, BreakKind.TRUNCATED)


def test_forged_entry_with_another_key() -> None:
    entries = make_chain(5)
    forged = make_chain(1, key=OTHER, start=6, prev=entries[-1].tag)
    assert broken_at(chain.verify(entries + forged, RING)) == (6, BreakKind.BAD_TAG)


def test_unknown_key_id() -> None:
    entries = make_chain(3)
    entries[1] = entries[1]._replace(key_id="k9")
    assert broken_at(chain.verify(entries, RING)) == (2, BreakKind.UNKNOWN_KEY)


def test_checkpoint_mismatch_and_forged_checkpoint() -> None:
    entries = make_chain(6)
    wrong = chain.sign_checkpoint(KEY, "k1", CheckpointKind.CHECKPOINT, 4, b"\x01" * 32, 5, "n")
    assert broken_at(chain.verify(entries, RING, checkpoints=[wrong])) == (
        4,
        BreakKind.CHECKPOINT_MISMATCH,
    )
    forged = chain.sign_checkpoint(
        OTHER, "k1", CheckpointKind.CHECKPOINT, 5, entries[4].tag, 5, "n"
    )
    assert broken_at(chain.verify(entries, RING, checkpoints=[forged])) == (
        5,
        BreakKind.BAD_CHECKPOINT,
    )
    good = chain.sign_checkpoint(KEY, "k1", CheckpointKind.CHECKPOINT, 5, entries[4].tag, 5, "n")
    result = chain.verify(entries, RING, checkpoints=[good])
    assert (result.ok, result.checkpoints_checked) == (True, 1)
    assert chain.checkpoint_authentic(good, RING)
    assert not chain.checkpoint_authentic(good, {})


def test_range_from_anchor() -> None:
    entries = make_chain(10)
    result = chain.verify(entries[4:], RING, start_seq=5, prev_tag=entries[3].tag, head_seq=10)
    assert (result.ok, result.checked) == (True, 6)
    assert broken_at(chain.verify(entries[5:], RING, start_seq=5, prev_tag=entries[3].tag)) == (
        5,
        BreakKind.GAP,
    )
    # a range ending early is not a truncation
    assert chain.verify(entries[:5], RING, to_seq=5, head_seq=10).ok


_FIELDS = ["ts_us", "node", "actor", "acting_for", "role", "org", "action", "target_type",
           "target_id", "result", "reason", "source", "request_id", "key_id", "tag"]  # fmt: skip


@given(index=st.integers(0, 11), field=st.sampled_from(_FIELDS), bit=st.integers(0, 7))
def test_any_single_bit_flip_is_named(index: int, field: str, bit: int) -> None:
    entries = make_chain(12)
    value = getattr(entries[index], field)
    if value is None:
        value = "x"
    elif isinstance(value, int):
        value ^= 1 << bit
    elif isinstance(value, bytes):
        value = bytes([value[0] ^ (1 << bit)]) + value[1:]
    else:
        value = chr(ord(value[0]) ^ (1 << bit)) + value[1:]
    entries[index] = entries[index]._replace(**{field: value})
    ring = {"k1": KEY, chr(ord("k") ^ (1 << bit)) + "1": OTHER}
    found = broken_at(chain.verify(entries, ring))
    assert found is not None
    assert found[0] == index + 1
