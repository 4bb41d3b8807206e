"""Check results in words: a one-line description per outcome and its key figures.

The Dagster UI shows an execution's ``description`` in the check's history and partition views
(without one every row reads "-"), and top-level metadata as plain rows, while nested JSON sits
behind "Show JSON". So each ``AssetCheckResult`` carries ``describe(outcome)`` and the figures
of ``key_figures(outcome)`` at the top level. Pure functions of a ``CheckOutcome``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from petrosa_pipelines.checks.audit import CheckOutcome

#: what one checked unit of each check is, for "3 of 1,440 candles offend"
UNITS = {
    "candles_unique": "candles",
    "candles_ohlc_consistent": "candles",
    "candles_volumes_valid": "candles",
    "candles_continuous": "consecutive minutes",
    "candles_no_anomalies": "1m returns",
    "candles_wicks_plausible": "candles",
    "candles_match_trades": "minutes",
    "trades_unique": "trades",
    "trades_time_ordered": "consecutive trades",
    "trades_values_valid": "trades",
    "trades_within_candles": "trades",
    "depth_sequence": "consecutive samples",
    "depth_not_crossed": "snapshots",
    "depth_levels_ordered": "book levels",
    "funding_rate_within_bounds": "settlements",
    "funding_mark_price_present": "settlements",
    "gx_suite": "expectations",
}


def short_time(iso: str) -> str:
    """``2024-05-01T10:03:00Z`` -> ``2024-05-01T10:03Z`` (seconds kept when not zero)."""
    text = str(iso)
    if text.endswith(":00Z") and text.count(":") == 2:
        return text[:-4] + "Z"
    return text


def time_range(start: str, end: str) -> str:
    """``2024-05-01T10:03Z-10:10Z``: the end's date is left out when it is the start's."""
    a, b = short_time(start), short_time(end)
    if a[:11] == b[:11]:
        b = b[11:]
    return f"{a}-{b}"


def _n(value: Any) -> str:
    v = float(value)
    return f"{int(v):,}" if v == int(v) else f"{v:,.4g}"


def _duration(ms: float) -> str:
    s = float(ms) / 1000
    if s < 120:
        return f"{s:g} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _pct(share: float) -> str:
    return f"{100 * float(share):.1f} %"


def first_example(o: CheckOutcome) -> str:
    """The first offending row or range as short text ("" when there is none)."""
    if not o.examples:
        return ""
    ex = o.examples[0]
    if not isinstance(ex, Mapping):
        return str(ex)
    if "start" in ex and "end" in ex:
        return time_range(ex["start"], ex["end"])
    items = [(k, v) for k, v in ex.items() if not k.endswith("_ms") and v is not None]
    return ", ".join(f"{k}={short_time(v) if isinstance(v, str) else v}" for k, v in items[:5])


def _ranges(o: CheckOutcome, total: float) -> str:
    shown = [time_range(e["start"], e["end"]) for e in o.examples if "start" in e]
    more = int(total) - len(shown)
    return ", ".join(shown[:3]) + (f" (+{more} more)" if more > 0 else "")


def _candles_complete(o: CheckOutcome) -> str:
    c = o.counts
    if o.passed:
        return f"all {_n(c.get('expected', o.checked))} closed minutes present"
    parts = []
    if c.get("missing_minutes"):
        parts.append(
            f"{_n(c['missing_minutes'])} minutes missing: {_ranges(o, c.get('missing_ranges', 0))}"
        )
    if c.get("unaligned"):
        parts.append(f"{_n(c['unaligned'])} candles off the minute grid")
    if c.get("outside_window"):
        parts.append(f"{_n(c['outside_window'])} candles outside the day")
    return "; ".join(parts)


def _depth_coverage(o: CheckOutcome) -> str:
    c = o.counts
    cadence = _duration(c.get("cadence_ms", 1000))
    head = f"{_pct(c['coverage'])} of {cadence} sample slots covered"
    if "min_coverage" in c:
        head += f" (min {_pct(c['min_coverage'])})"
    if c.get("uncovered_ms"):
        ranges = _ranges(o, c.get("uncovered_ranges", 0))
        head += f"; {_duration(c['uncovered_ms'])} uncovered: {ranges}"
    return head + (f"; {o.note}" if o.note else "")


def _fresh(o: CheckOutcome) -> str:
    c = o.counts
    lag, most = _duration(c["lag_s"] * 1000), _duration(c["max_lag_s"] * 1000)
    text = f"newest row {lag} behind the newest possible (max {most})"
    if not o.passed and o.examples and o.examples[0].get("newest") is None:
        return f"no rows yet: {text}"
    return text


def _trades_ids(o: CheckOutcome) -> str:
    c = o.counts
    if o.checked == 0:
        return "no trades to check"
    if o.passed:
        return f"{_n(o.checked)} consecutive aggregate trade ids {c['first_id']}-{c['last_id']}"
    first = o.examples[0] if o.examples else {}
    where = (
        f": first {first['first_missing_id']}-{first['last_missing_id']} between "
        f"{short_time(first['after'])} and {short_time(first['before'])}"
        if first
        else ""
    )
    return (
        f"{_n(c['missing_ids'])} aggregate trade ids missing in {_n(c['gap_ranges'])} gaps{where}"
    )


def _funding_schedule(o: CheckOutcome) -> str:
    c = o.counts
    grid = f"{_n(c['interval_hours'])} h grid"
    if o.passed:
        return f"all {_n(c['expected_settlements'])} settlements on the {grid}"
    missing = [e["missing_settlement"] for e in o.examples if "missing_settlement" in e]
    parts = [
        f"{_n(c['missing_settlements'])} of {_n(c['expected_settlements'])} settlements "
        "missing" + (f" ({', '.join(short_time(m) for m in missing[:3])})" if missing else "")
    ]
    if c.get("off_grid"):
        parts.append(f"{_n(c['off_grid'])} off the {grid}")
    return "; ".join(parts)


def _reconcile(o: CheckOutcome) -> str:
    if o.note:
        return o.note
    pairs = o.extra.get("pairs", {})
    head = f"{len(pairs)} source pairs compared over {_n(o.checked)} rows"
    if o.passed:
        return f"{head}: all agree"
    return f"{head}: {_n(o.offending)} disagree; first: {first_example(o)}"


def _gx(o: CheckOutcome) -> str:
    suite = o.note.removeprefix("suite ").strip() or "the suite"
    if o.passed:
        return f"all {_n(o.checked)} expectations of {suite} met"
    failed = []
    for e in o.examples[:3]:
        rows = e.get("unexpected_count")
        what = e.get("column") or ""
        if rows is not None:
            what = f"{what}: {_n(rows)} rows" if what else f"{_n(rows)} rows"
        failed.append(f"{e.get('expectation')}({what})")
    more = o.offending - len(failed)
    return (
        f"{_n(o.offending)} of {_n(o.checked)} expectations of {suite} failed: "
        + ", ".join(failed)
        + (f" (+{more} more)" if more > 0 else "")
    )


_SPECIFIC: dict[str, Callable[[CheckOutcome], str]] = {
    "gx_suite": _gx,
    "candles_complete": _candles_complete,
    "depth_coverage": _depth_coverage,
    "fresh": _fresh,
    "trades_id_continuous": _trades_ids,
    "funding_interval_respected": _funding_schedule,
    "candles_sources_agree": _reconcile,
    "trades_sources_agree": _reconcile,
}


def describe(o: CheckOutcome, day_note: str = "") -> str:
    """One line saying why ``o`` passed, failed or could not judge its partition.

    ``day_note`` (``applicability.open_day_note``) says the partition is the open day judged
    as of its build, so "all 720 candles pass" on today reads as the day so far.
    """
    text = _describe(o)
    return f"{text} [{day_note}]" if day_note and not o.not_applicable else text


def _describe(o: CheckOutcome) -> str:
    if o.not_applicable:
        return o.not_applicable
    specific = _SPECIFIC.get(o.name)
    if specific is not None:
        return specific(o)
    unit = UNITS.get(o.name, "units")
    if o.checked == 0 and o.passed:
        return o.note or f"nothing to check: no {unit}"
    if o.passed:
        return f"all {_n(o.checked)} {unit} pass" + (f" ({o.note})" if o.note else "")
    text = f"{_n(o.offending)} of {_n(o.checked)} {unit} offend"
    first = first_example(o)
    return text + (f"; first: {first}" if first else "")


def key_figures(o: CheckOutcome) -> dict[str, Any]:
    """Top-level metadata beyond the counts: the first offending row or range as text."""
    first = first_example(o)
    return {"first_offending_text": first} if first and not o.passed else {}
