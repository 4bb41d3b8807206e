"""NATS subject names of the live outputs and the JSON schema of each subject's messages.

Market data goes on ``<prefix>.<venue>.<dataset>.<SYMBOL>`` (``petrosa.binance-usdm.trades.
BTCUSDT``), quality events on ``<prefix>.quality.<venue>.<dataset>.<SYMBOL>``. The venue token
is the instrument's venue id (``instruments.py`` owns ids), so Binance and Bybit ``BTCUSDT``
never share a subject. A token may hold only ``[A-Za-z0-9_-]``: NATS splits subjects on ``.``
and gives ``*``, ``>`` and whitespace a meaning (https://docs.nats.io/nats-concepts/subjects),
so a symbol holding anything else is refused with ``SubjectError`` instead of being mangled.

Each schema is derived from the catalog (``catalog/schemas.py``): one JSON object per row,
the catalog's columns with their descriptions, plus ``venue``. Times are integers, ms since
the epoch (UTC); prices and quantities JSON numbers (the catalog's float64, exact for the
venue's decimals). Depth is one message per sampled book (``bids``/``asks`` lists of
``[price, quantity]``, level 0 first) instead of one per level. ``mark_price`` (the live
funding rate and mark price, not a catalog dataset) and ``quality`` are described here.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from petrosa_pipelines.catalog.schemas import (
    CANDLES,
    DEPTH,
    FUNDING,
    RAW_TRADES,
    TRADES,
    TS,
    Column,
    DatasetSchema,
)

#: the first token of every subject (``PETROSA_LIVE_SUBJECT_PREFIX`` may change it)
DEFAULT_PREFIX = "petrosa"
#: the token after the prefix of quality subjects (no venue id is ``quality``)
QUALITY = "quality"
#: what a subject token may hold (no ``.``, ``*``, ``>``, whitespace)
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: the prefix may have several tokens (``org.petrosa``)
PREFIX = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,3}")

#: the market-data datasets the live outputs publish, catalog schema or None (described here)
LIVE_DATASETS: dict[str, DatasetSchema | None] = {
    "trades": TRADES,
    "raw_trades": RAW_TRADES,
    "candles": CANDLES,
    "depth": DEPTH,
    "funding": FUNDING,
    "mark_price": None,
}


class SubjectError(ValueError):
    """A name that cannot be a NATS subject token (it would split or widen the subject)."""


def token(what: str, value: str) -> str:
    """``value`` when it is a valid subject token, else ``SubjectError`` naming ``what``."""
    if not isinstance(value, str) or not TOKEN.fullmatch(value):
        raise SubjectError(
            f"{what} {value!r} cannot be a NATS subject token: allowed [A-Za-z0-9_-], 1-128 "
            "characters ('.' splits a subject, '*' and '>' are wildcards)"
        )
    return value


def check_prefix(prefix: str) -> str:
    if not isinstance(prefix, str) or not PREFIX.fullmatch(prefix):
        raise SubjectError(
            f"subject prefix {prefix!r} is not valid: 1-4 dot-separated tokens of [A-Za-z0-9_-]"
        )
    return prefix


def data_subject(venue: str, dataset: str, symbol: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``<prefix>.<venue>.<dataset>.<SYMBOL>``."""
    if dataset not in LIVE_DATASETS:
        raise SubjectError(f"dataset {dataset!r} is not published; known {list(LIVE_DATASETS)}")
    return f"{prefix}.{token('venue', venue)}.{dataset}.{token('symbol', symbol)}"


def quality_subject(venue: str, dataset: str, symbol: str, prefix: str = DEFAULT_PREFIX) -> str:
    """``<prefix>.quality.<venue>.<dataset>.<SYMBOL>`` (``dataset`` may be ``ingest``,
    ``health``: any token)."""
    return (
        f"{prefix}.{QUALITY}.{token('venue', venue)}.{token('dataset', dataset)}."
        f"{token('symbol', symbol)}"
    )


def stream_subjects(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """What the JetStream stream captures: everything under the prefix."""
    return [f"{check_prefix(prefix)}.>"]


# ------------------------------------------------------------------------------- JSON schemas
_JSON_TYPES = {pa.string(): "string", pa.int64(): "integer", pa.float64(): "number"}
_VENUE = {"type": "string", "description": "Venue id of the instrument (instruments.py)."}


def _column_schema(col: Column) -> dict[str, Any]:
    if col.type == TS:
        kind, extra = "integer", " Milliseconds since the epoch (UTC)."
    elif col.type == pa.bool_():
        kind, extra = "boolean", ""
    else:
        kind, extra = _JSON_TYPES[col.type], ""
    kinds = [kind, "null"] if col.nullable else kind
    return {"type": kinds, "description": col.description + extra}


def _object(title: str, props: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "description": description,
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def row_schema(schema: DatasetSchema) -> dict[str, Any]:
    """One catalog row as a JSON object (plus ``venue``)."""
    props = {"venue": _VENUE, **{c.name: _column_schema(c) for c in schema.columns}}
    title = f"{schema.name} v{schema.version}"
    return _object(title, props, schema.description)


#: version of the book-sample message: its own, not the depth dataset's (the message was one
#: per snapshot, with ``[price, quantity]`` pairs, before the dataset became so in its v2)
DEPTH_MESSAGE_VERSION = 1


def depth_schema() -> dict[str, Any]:
    """A sampled book: the catalog's depth row of one snapshot, its levels as
    ``[price, quantity]`` pairs rather than the catalog's four arrays."""
    cols = {c.name: c for c in DEPTH.columns}
    level = {
        "type": "array",
        "prefixItems": [
            {"type": "number", "description": "Level price."},
            {"type": "number", "description": "Resting quantity at that price."},
        ],
        "minItems": 2,
        "maxItems": 2,
    }

    def side(name: str) -> dict[str, Any]:
        return {"type": "array", "items": level, "description": f"{name} levels, level 0 first."}

    props = {"venue": _VENUE}
    props.update({n: _column_schema(cols[n]) for n in ("exchange", "symbol", "snapshot_time")})
    props["last_update_id"] = _column_schema(cols["last_update_id"])
    props["bids"], props["asks"] = side("Bid"), side("Ask")
    props.update({n: _column_schema(cols[n]) for n in ("source", "received_at")})
    return _object(f"depth v{DEPTH_MESSAGE_VERSION} (one sampled book)", props, DEPTH.description)


def mark_price_schema() -> dict[str, Any]:
    def num(desc: str, nullable: bool = False) -> dict[str, Any]:
        return {"type": ["number", "null"] if nullable else "number", "description": desc}

    def ms(desc: str, nullable: bool = False) -> dict[str, Any]:
        t = ["integer", "null"] if nullable else "integer"
        return {"type": t, "description": desc + " Milliseconds since the epoch (UTC)."}

    props = {
        "venue": _VENUE,
        "exchange": {"type": "string", "description": TRADES.columns[0].description},
        "symbol": {"type": "string", "description": TRADES.columns[1].description},
        "event_time": ms("Venue event time of the update."),
        "mark_price": num("Mark price."),
        "index_price": num("Index price (null when the venue did not send it).", True),
        "estimated_settle_price": num("Estimated settle price (null when not sent).", True),
        "funding_rate": num("Funding rate predicted for the next settlement.", True),
        "next_funding_time": ms("Next funding settlement.", True),
        "received_at": ms("When we received it.", True),
    }
    return _object(
        "mark_price v1",
        props,
        "Live mark price and predicted funding rate (Binance markPriceUpdate, Bybit tickers); "
        "the settled rates are on the funding subject.",
    )


def quality_schema() -> dict[str, Any]:
    def opt(kind: str, desc: str) -> dict[str, Any]:
        return {"type": [kind, "null"], "description": desc}

    props = {
        "kind": {"type": "string", "enum": ["check", "alert", "health"], "description": "What."},
        "venue": _VENUE,
        "symbol": {"type": "string", "description": "Symbol (or ingest group of an alert)."},
        "dataset": {"type": "string", "description": "Dataset, or ingest / health."},
        "partition": opt("string", "Partition key YYYY-MM-DD|<venue>:<SYMBOL>, when one."),
        "name": {"type": "string", "description": "Check name, alert kind or 'health'."},
        "passed": opt("boolean", "Whether the check passed (null: not a check)."),
        "severity": opt("string", "WARN or ERROR."),
        "score": opt("number", "Health score 0..1 (health events)."),
        "status": opt("string", "Health status (ok / degraded / failed / not_applicable)."),
        "description": {"type": "string", "description": "One line saying why."},
        "metadata": {"type": "object", "description": "Key figures of the result."},
        "run_id": opt("string", "Dagster run id, when known."),
        "emitted_at": {"type": "integer", "description": "When published (ms, UTC)."},
    }
    return _object("quality v1", props, "A check result, an alert or a health change.")


def subject_schemas() -> dict[str, dict[str, Any]]:
    """Subject pattern -> JSON schema of its messages (docs/live.md lists the same)."""
    out = {}
    for name, schema in LIVE_DATASETS.items():
        pattern = f"{DEFAULT_PREFIX}.<venue>.{name}.<SYMBOL>"
        if name == "depth":
            out[pattern] = depth_schema()
        elif name == "mark_price":
            out[pattern] = mark_price_schema()
        else:
            out[pattern] = row_schema(schema)  # type: ignore[arg-type]
    # a group without klines (the socket-client's streams) publishes bars built from its
    # trades (live/candles.py)
    candles = out[f"{DEFAULT_PREFIX}.<venue>.candles.<SYMBOL>"]["properties"]["source"]
    candles["description"] += " Live only: trades (a 1-minute bar built from market trades)."
    out[f"{DEFAULT_PREFIX}.{QUALITY}.<venue>.<dataset>.<SYMBOL>"] = quality_schema()
    return out


def schema_for_subject(subject: str, prefix: str = DEFAULT_PREFIX) -> dict[str, Any]:
    """The JSON schema of the messages on ``subject``."""
    rest = subject[len(prefix) + 1 :].split(".") if subject.startswith(prefix + ".") else []
    if len(rest) == 4 and rest[0] == QUALITY:
        return quality_schema()
    if len(rest) == 3 and rest[1] in LIVE_DATASETS:
        return subject_schemas()[f"{DEFAULT_PREFIX}.<venue>.{rest[1]}.<SYMBOL>"]
    raise SubjectError(f"{subject!r} is not a live-output subject under {prefix!r}")
