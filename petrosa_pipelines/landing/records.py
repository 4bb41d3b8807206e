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


class GapRecord(msgspec.Struct, frozen=True):
    """A window in which a dataset of a symbol may be incomplete, and why.

    ``cause`` is one of ``disconnect`` (no connection), ``sequence_break`` (depth ``pu`` did not
    chain), ``resync`` (book rebuilt from a new snapshot), ``id_gap`` (aggregate trade ids
    skipped), ``writer_restart`` (the ingest was down). The auditing and backfill work reads
    these entries to decide which partitions to repair, so ``start_ms``/``end_ms`` are in the
    time the dataset's partitions are cut by: trade time for trades (Binance pushes a trade a
    little after it happened), candle open time for candles, event time for depth and funding.
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


def encode_gap(gap: GapRecord) -> bytes:
    return _gap_encoder.encode(gap)


def decode_gap(data: bytes) -> GapRecord:
    return _gap_decoder.decode(data)


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
