"""``load_health`` reads what the real ``checks/health`` asset wrote (not a path of its own)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from petrosa_pipelines import api
from petrosa_pipelines.checks.definitions import health
from petrosa_pipelines_tests.test_checks.test_dagster_checks import DAY, _materialize, _setup


@pytest.mark.slow  # several seconds: the full suite, not the fast lane
def test_load_health_reads_the_health_assets_lake_files(world, lake, instance):
    _setup(world, gap_symbol="ETHUSDT")
    pk = f"{DAY.isoformat()}|ETHUSDT"
    _materialize(world, lake, instance, pk)
    result = dg.materialize(
        [health], partition_key=pk, instance=instance, resources={"io_manager": lake}
    )
    assert result.success
    sources = api.DataSources(
        lake=lake.lake(),
        symbols=("ETHUSDT",),
        now=lambda: dt.datetime.combine(DAY, dt.time(), dt.UTC) + dt.timedelta(days=2),
    )
    r = api.load_health("ETHUSDT", DAY, DAY + dt.timedelta(days=1), sources=sources)
    assert r.complete and not r.missing_partitions
    scores = dict(zip(r.frame["dataset"], r.frame["score"], strict=True))
    assert scores["candles"] < 100 and scores["trades"] == 100
