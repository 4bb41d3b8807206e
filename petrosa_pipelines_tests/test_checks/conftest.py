"""Market-data stand-ins with the real asset keys and partitions, built on the real fill.

Each fake asset fills its partition with ``fill_partition`` from a landing source (what the
websocket got, possibly with holes) and a REST source that can be switched off, so a gap left
by a dead REST endpoint is exactly what the auto-backfill later repairs.
"""

import datetime as dt
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd
import pytest

from petrosa_pipelines.market_data.assets import MarketDataConfig, dedup_keep
from petrosa_pipelines.market_data.datasets import SPECS
from petrosa_pipelines.market_data.fill import (
    HistorySource,
    PartitionWindow,
    SourceAnswer,
    fill_partition,
)
from petrosa_pipelines.market_data.partitions import daily_symbol_partitions, split_partition_key
from resources.lake_io_manager import LakeIOManager

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@dataclass
class World:
    """What each source holds per (dataset, partition key)."""

    landing: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    rest_up: bool = True


class _Landing(HistorySource):
    name = "ws"

    def __init__(self, frame):
        self.frame = frame

    def fetch(self, window, missing):
        return SourceAnswer(self.frame if self.frame is not None else pd.DataFrame(), [])


class _Rest(HistorySource):
    name = "rest"

    def __init__(self, world, frame, dataset):
        self.world, self.frame, self.dataset = world, frame, dataset

    def fetch(self, window, missing):
        if not self.world.rest_up:
            raise ConnectionError("REST endpoint unreachable")
        col = SPECS[self.dataset].schema.time_column
        ms = self.frame[col].to_numpy(dtype="datetime64[ms]").view("int64")
        keep = pd.Series(False, index=self.frame.index)
        for a, b in missing:
            keep |= (ms >= a) & (ms < b)
        return SourceAnswer(self.frame[keep.to_numpy()], list(missing))


def make_market_asset(dataset: str, world: World):
    @dg.asset(
        key=["market_data", dataset],
        partitions_def=daily_symbol_partitions,
        metadata={"exchange": "binance"},
    )
    def _asset(context: dg.AssetExecutionContext, config: MarketDataConfig) -> pd.DataFrame:
        pk = str(context.partition_key)
        day, symbol = split_partition_key(pk)
        window = PartitionWindow(day=day, symbol=symbol, now_ms=2**62)
        sources = [_Landing(world.landing.get((dataset, pk)))]
        if (dataset, pk) in world.history:
            sources.append(_Rest(world, world.history[(dataset, pk)], dataset))
        keep = dedup_keep(config)
        return fill_partition(SPECS[dataset](), window, sources, keep=keep).frame

    return _asset


@pytest.fixture
def world():
    return World()


@pytest.fixture
def lake(tmp_path):
    return LakeIOManager(base_path=str(tmp_path / "lake"))


@pytest.fixture
def instance():
    """An in-memory instance (the root conftest's ``dagster_instance`` says why) with the
    symbols registered."""
    with dg.DagsterInstance.ephemeral() as inst:
        inst.add_dynamic_partitions("symbols", SYMBOLS)
        yield inst


class FakeLandingResource:
    """The landing resource's surface the checks use: a store with ``gaps`` and ``read_frame``."""

    def __init__(self, gaps=(), frames=None):
        self._gaps, self._frames = list(gaps), frames or {}

    def store(self):
        return self

    def gaps(self, exchange, start_ms, end_ms, dataset=None, symbol=None):
        return [
            g
            for g in self._gaps
            if g.end_ms > start_ms
            and g.start_ms < end_ms
            and dataset in (None, g.dataset)
            and symbol in (None, g.symbol)
        ]

    def read_frame(self, exchange, dataset, symbol, start_ms, end_ms):
        return self._frames.get((dataset, symbol), pd.DataFrame())


class FakeExchangeResource:
    """Archive and REST clients answering from frames (the reconciliation's sources)."""

    def __init__(self, archive=None):
        self._archive = archive or {}

    def settings(self):
        from petrosa_pipelines.settings import Settings

        return Settings()

    def archive(self, venue=None):
        assert venue in (None, "binance-usdm"), venue  # the partition's venue asks
        return self

    def rest(self, venue=None):
        raise ConnectionError("no REST in this test")

    def daily_klines(self, symbol: str, day: dt.date):
        return self._archive.get(("candles", symbol, day))

    def daily_agg_trades(self, symbol: str, day: dt.date):
        return self._archive.get(("trades", symbol, day))
