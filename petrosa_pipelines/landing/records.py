"""What the landing zone stores beside the raw frames: gap-ledger entries, dead letters, and the
internal lines (REST depth snapshots, book checkpoints) that sit in the data segments.

Raw websocket frames are landed untouched (``<received_at_ms> <frame>``), so replaying them
through the adapter reproduces the records. Things that did not arrive as a websocket frame are
landed as ``<received_at_ms> !<kind> <SYMBOL> <json>`` lines; no exchange frame starts with ``!``.
"""

from __future__ import annotations

import base64

import msgspec

from petrosa_pipelines.exchanges.base import DepthSnapshotRecord
from petrosa_pipelines.lib.timeutil import HOUR_MS

#: 2010-01-01: no market data predates it, so an earlier ledger time is corrupt
EARLIEST_LEDGER_MS = 1_262_304_000_000
#: 2100-01-01: the latest ``recorded_at`` a reader believes (ours is a receipt clock)
LATEST_LEDGER_MS = 4_102_444_800_000
#: how far a ledger entry's data time may run ahead of the clock that recorded it (skew)
LEDGER_MAX_AHEAD_MS = HOUR_MS


class GapRecord(msgspec.Struct, frozen=True):
    """A window in which a dataset of a symbol may be incomplete, and why.

    ``cause`` is one of ``disconnect`` (no connection), ``sequence_break`` (depth ``pu`` did not
    chain), ``resync`` (book rebuilt from a new snapshot), ``id_gap`` (aggregate trade ids
    skipped), ``writer_restart`` (the ingest was down), ``rotation_no_overlap`` (a connection
    rotation ended before the new connection proved it overlapped the old one), ``nats_silence``
    and ``nats_disconnect`` (the NATS source, ``ingest/nats_source.py``). The auditing and
    backfill work reads these entries to decide which partitions to repair, so ``start_ms`` and
    ``end_ms`` are in the time the dataset's partitions are cut by: trade time for trades
    (Binance pushes a trade a little after it happened), candle open time for candles, event
    time for depth and funding.
    """

    dataset: str
    symbol: str
    start_ms: int
    end_ms: int
    cause: str
    recorded_at: int
    group: str = ""
    detail: str = ""


class DeadLetter(msgspec.Struct, frozen=True):
    """A frame the adapter rejected: raw bytes, why, which field, when."""

    received_at: int
    reason: str
    field: str
    raw: bytes
    group: str = ""


class _DeadLetterLine(msgspec.Struct, frozen=True):
    reason: str
    field: str
    raw_b64: str


#: internal line kinds
DEPTH_SNAPSHOT = b"depth_snapshot"
BOOK_CHECKPOINT = b"book_checkpoint"

_gap_encoder = msgspec.json.Encoder()
_gap_decoder = msgspec.json.Decoder(GapRecord)
_dl_decoder = msgspec.json.Decoder(_DeadLetterLine)
_snap_decoder = msgspec.json.Decoder(DepthSnapshotRecord)


def sane_gap(gap: GapRecord) -> GapRecord:
    """``gap`` with its window clamped to times that can be real, the original kept in detail.

    A window's data time cannot lie before any market existed nor far after the clock that
    recorded it: one far-future trade time (``T`` near 2**63) once made an entry end at
    2**63-1, and every reader that walked its days (the auto-backfill sensor) hung. Applied
    when an entry is written and again when it is read, so a ledger poisoned before this
    check is read safely.
    """
    rec = min(max(gap.recorded_at, EARLIEST_LEDGER_MS), LATEST_LEDGER_MS)
    latest = rec + LEDGER_MAX_AHEAD_MS
    start = min(max(gap.start_ms, EARLIEST_LEDGER_MS), latest)
    end = min(max(gap.end_ms, EARLIEST_LEDGER_MS), latest)
    start, end = min(start, end), max(start, end)
    if (start, end, rec) == (gap.start_ms, gap.end_ms, gap.recorded_at):
        return gap
    note = f"clamped from {gap.start_ms}..{gap.end_ms} recorded_at {gap.recorded_at}"
    return msgspec.structs.replace(
        gap,
        start_ms=start,
        end_ms=end,
        recorded_at=rec,
        detail=f"{gap.detail}; {note}" if gap.detail else note,
    )


def encode_gap(gap: GapRecord) -> bytes:
    return _gap_encoder.encode(sane_gap(gap))


def decode_gap(data: bytes) -> GapRecord:
    """One ledger entry, its window made sane (see :func:`sane_gap`); ``msgspec`` errors on
    a file that is not an entry."""
    return sane_gap(_gap_decoder.decode(data))


def encode_dead_letter(raw: bytes | str, reason: str, field: str) -> bytes:
    """One JSON line payload; raw bytes are base64 so any garbage survives the round trip."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    return _gap_encoder.encode(
        _DeadLetterLine(reason=reason, field=field, raw_b64=base64.b64encode(raw).decode())
    )


def decode_dead_letter(received_at: int, payload: bytes, group: str) -> DeadLetter:
    d = _dl_decoder.decode(payload)
    return DeadLetter(
        received_at=received_at,
        reason=d.reason,
        field=d.field,
        raw=base64.b64decode(d.raw_b64),
        group=group,
    )


def encode_snapshot(kind: bytes, snap: DepthSnapshotRecord) -> bytes:
    """``!<kind> <SYMBOL> <json>`` for a REST snapshot or a book checkpoint."""
    return b"!%b %b %b" % (kind, snap.symbol.encode(), _gap_encoder.encode(snap))


def decode_internal(payload: bytes) -> tuple[bytes, str, DepthSnapshotRecord]:
    """(kind, symbol, snapshot) of an internal line payload (starting with ``!``)."""
    kind, symbol, body = payload[1:].split(b" ", 2)
    return kind, symbol.decode(), _snap_decoder.decode(body)
