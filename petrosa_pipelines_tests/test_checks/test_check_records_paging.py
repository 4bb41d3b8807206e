"""The alert sensor's reader of new check results pages through the history: a batched audit
run writes one row per instrument-day, more than one page (``HISTORY_LIMIT``) between two
sensor ticks at a few hundred instruments, and none may be skipped."""

from __future__ import annotations

import dagster as dg

from petrosa_pipelines.checks import records
from petrosa_pipelines.checks.records import new_check_records

KEY = dg.AssetCheckKey(dg.AssetKey(["market_data", "candles"]), "candles_complete")


def _evaluate(instance: dg.DagsterInstance, partition: str, passed: bool) -> None:
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=KEY.asset_key,
            check_name=KEY.name,
            passed=passed,
            partition=partition,
            severity=dg.AssetCheckSeverity.ERROR,
        )
    )


def test_every_new_result_is_read_across_pages(monkeypatch):
    monkeypatch.setattr(records, "HISTORY_LIMIT", 7)  # pages of 7: 30 rows are 5 pages
    with dg.DagsterInstance.ephemeral() as instance:
        for i in range(3):
            _evaluate(instance, f"2024-01-0{i + 1}|binance-usdm:BTCUSDT", True)
        cursor: dict[str, int] = {}
        assert len(list(new_check_records(instance, [KEY], cursor))) == 3
        parts = [f"2024-02-{d:02d}|binance-usdm:S{i}USDT" for d in range(1, 11) for i in range(3)]
        for n, pk in enumerate(parts):
            _evaluate(instance, pk, n % 4 != 0)
        got = list(new_check_records(instance, [KEY], cursor))
        assert [r.partition for r in got] == parts  # all 30, oldest first, none twice
        assert sum(not r.passed for r in got) == 8
        assert list(new_check_records(instance, [KEY], cursor)) == []
