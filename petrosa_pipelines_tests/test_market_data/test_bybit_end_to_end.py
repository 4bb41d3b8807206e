"""Bybit linear end to end: the websocket ingest under faults, then the same four assets as
Binance USD-M, with their checks, against the local exchange.

The ingest streams ``bybit-linear:BTCUSDT`` across the last minutes of a day on a simulated
clock while the exchange drops messages, cuts the connection and restarts its book service (a
snapshot with ``u`` = 1, https://bybit-exchange.github.io/docs/v5/ws/topic/orderbook). The day
is then materialised through ``market_data/{trades,candles,depth,funding}`` with every check:
the trades must be exactly the exchange's (by Bybit's own trade id, a UUID), the depth exactly
the exchange's book at every sample, and funding present. The same day of
``binance-usdm:BTCUSDT`` goes through the same assets in the same instance.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from petrosa_pipelines.catalog.depth_layout import side_matrix
from petrosa_pipelines.checks.definitions import ALL_CHECKS
from petrosa_pipelines.ingest import IngestConfig, IngestEngine
from petrosa_pipelines.instruments import parse_instrument, partition_key_str
from petrosa_pipelines.lake import LocalLake, lake_path
from petrosa_pipelines.landing import LandingStore
from petrosa_pipelines.lib.timeutil import day_window_ms
from petrosa_pipelines.local_exchange import Faults, LocalExchange, MarketConfig, SimulatedClock
from resources import ExchangeResource, LakeIOManager, LandingResource

#: a real ingest on a simulated clock, then real runs; the module's fixture (both venues' day)
#: counts against its first test: at 400,000 trades a day it took 262 s in an idle CI, 619 s with
#: a CPU burner beside the suite, over the suite's 600 s per test, so this module has a longer
#: deadline (a deadline, not a speed target)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

DAY = dt.date(2024, 3, 2)
DAY_START, DAY_END = day_window_ms(DAY)
BYBIT = "bybit-linear:BTCUSDT"
BINANCE = "binance-usdm:BTCUSDT"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
#: the ingest runs over the day's last minutes, the archive fills what came before
INGEST_FROM_MS = DAY_END - 8 * 60_000
#: simulated seconds per wall second while the ingest runs
SPEED = 30.0
#: busy enough that the window holds hundreds of trade messages (400,000 a day cost the module's
#: fixture 10 CPU-seconds more and tested nothing more)
TRADES_PER_DAY = 200_000
BOOK_STEP_MS = 1_000
#: the periodic cut: at least two before the clean last minute, besides the forced one
DISCONNECT_EVERY = 700
#: wall-clock budget for the ingest to get past midnight (a loaded 2-core machine)
DEADLINE_S = 240.0


@pytest.fixture(scope="module")
def exchange():
    market = MarketConfig(
        seed=5,
        symbols=SYMBOLS,
        trades_per_day=TRADES_PER_DAY,
        book_levels=100,
        book_step_ms=BOOK_STEP_MS,
    )
    clock = SimulatedClock(INGEST_FROM_MS, speed=SPEED)
    faults = Faults(seed=3, drop_probability=0.002, disconnect_every_n_messages=DISCONNECT_EVERY)
    with LocalExchange(market=market, faults=faults, clock=clock) as ex:
        yield ex


def _ingest_under_faults(ex: LocalExchange, landing: str) -> dict:
    """Stream ``BYBIT`` from ``INGEST_FROM_MS`` past midnight; halfway, cut every connection
    and restart the book service. Returns the engine's snapshot."""
    cfg = IngestConfig(
        group="bybit-e2e",
        exchange="bybit-linear",
        symbols=(parse_instrument(BYBIT).symbol,),
        landing_path=landing,
        ws_base_url=ex.ws_base_url,
        rest_base_url=ex.rest_base_url,
        backoff_initial_s=0.05,
        backoff_max_s=0.5,
        heartbeat_interval_s=0.5,
        stale_after_s=30.0,
    )
    engine = IngestEngine(cfg, clock_ms=ex.clock.now_ms)

    async def main() -> None:
        task = asyncio.create_task(engine.run())
        deadline = time.monotonic() + DEADLINE_S
        restarted = False
        dropping = None  # None: not yet; True: dropping until the book resynced; False: done
        depth_stream = f"orderbook.50.{parse_instrument(BYBIT).symbol}"
        try:

            def past_midnight() -> bool:
                # the ingest itself saw tickers after the settlement (a loaded machine lags
                # the simulated clock: stopping on the clock alone lost the crossing)
                return any(
                    st.dataset == "funding" and (st.last_event_ms or 0) >= DAY_END + 5_000
                    for st in engine.stats.streams.values()
                )

            while ex.now_ms() < DAY_END + 20_000 or not past_midnight():
                assert time.monotonic() < deadline, "the ingest did not get past midnight"
                assert not task.done(), task
                # a lost delta for certain (0.2 % random drops may miss the ~500 book
                # messages): drop more until the book resynced once
                if dropping is None and ex.now_ms() >= INGEST_FROM_MS + 2 * 60_000:
                    ex.faults.drop_probability, dropping = 0.05, True
                if dropping and engine.snapshot()["streams"][depth_stream]["resyncs"] >= 1:
                    ex.faults.drop_probability, dropping = 0.002, False
                # the last minute streams clean: the midnight settlement is seen in tickers
                # (a cut there, on a loaded machine, lost the crossing; the faults have been
                # exercised by then)
                if ex.now_ms() >= DAY_END - 60_000 and ex.faults.disconnect_every_n_messages:
                    ex.faults.disconnect_every_n_messages = 0
                    ex.faults.drop_probability, dropping = 0.0, False
                if not restarted and ex.now_ms() >= INGEST_FROM_MS + 4 * 60_000:
                    ex.faults.restart_book_service()
                    ex.disconnect_all()
                    restarted = True
                await asyncio.sleep(0.05)
        finally:
            engine.stop()
            await asyncio.wait_for(task, 30)

    asyncio.run(main())
    return engine.snapshot()


def _materialise(key: str, resources: dict, instance) -> dg.ExecuteInProcessResult:
    from petrosa_pipelines.market_data.assets import MARKET_DATA_ASSETS

    return dg.materialize(
        [*MARKET_DATA_ASSETS, *ALL_CHECKS],
        partition_key=key,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )


def _metadata(result) -> dict[str, dict]:
    return {
        e.event_specific_data.materialization.asset_key.path[-1]: {
            k: v.value for k, v in e.event_specific_data.materialization.metadata.items()
        }
        for e in result.get_asset_materialization_events()
    }


def _checks(result) -> dict[tuple[str, str], bool]:
    return {
        (e.event_specific_data.asset_key.path[-1], e.event_specific_data.check_name): (
            e.event_specific_data.passed
        )
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _failures(result) -> dict[str, str]:
    """What each failed check said, for the assertion message."""
    out = {}
    for e in result.all_events:
        data = e.event_specific_data
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not data.passed:
            meta = {k: v.value for k, v in data.metadata.items()}
            out[f"{data.asset_key.path[-1]}/{data.check_name}"] = str(meta)[:1500]
        if e.event_type_value == "STEP_FAILURE":
            err, chain = data.error, []
            while err is not None:  # the op's own exception is the cause of Dagster's wrapper
                chain.append(err.message.strip()[:600])
                err = err.cause
            out[e.step_key] = " <- ".join(chain)
    return out


@pytest.fixture(scope="module")
def materialised(exchange, tmp_path_factory):
    """The Bybit ingest under faults, then both venues' day through the same assets."""
    tmp = tmp_path_factory.mktemp("bybit_e2e")
    mp = pytest.MonkeyPatch()
    for var in ("REST", "ARCHIVE"):
        mp.setenv(f"PETROSA_BYBIT_LINEAR_{var}_BASE_URL", exchange.rest_base_url)
    mp.setenv("PETROSA_BYBIT_LINEAR_WS_BASE_URL", exchange.ws_base_url)
    mp.setenv("PETROSA_SYMBOLS", f"{BYBIT},{BINANCE}")
    mp.setenv("PETROSA_LANDING_PATH", str(tmp / "landing"))
    mp.setenv("PETROSA_LAKE_PATH", str(tmp / "lake"))
    try:
        snap = _ingest_under_faults(exchange, str(tmp / "landing"))
        resources = {
            "exchange": ExchangeResource(
                rest_base_url=exchange.rest_base_url,
                ws_base_url=exchange.ws_base_url,
                vision_base_url=exchange.vision_base_url,
            ),
            "landing": LandingResource(root=str(tmp / "landing")),
            "io_manager": LakeIOManager(base_path=str(tmp / "lake")),
        }
        out = {"snapshot": snap, "lake": LocalLake(tmp / "lake"), "landing": str(tmp / "landing")}
        with dg.DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions("symbols", [BYBIT, BINANCE])
            for inst in (BYBIT, BINANCE):
                out[inst] = _materialise(partition_key_str(DAY, inst), resources, instance)
        yield out
    finally:
        mp.undo()


def _read(materialised, dataset: str, inst: str) -> pd.DataFrame:
    i = parse_instrument(inst)
    return materialised["lake"].read_frame(
        lake_path(f"market_data/{dataset}", i.exchange, i.symbol, DAY.isoformat())
    )


def test_the_ingest_met_every_fault(materialised):
    snap = materialised["snapshot"]
    stats = snap["group_stats"]
    assert stats["connections_opened"] >= 3, stats  # the periodic cuts and the forced one
    assert stats["dead_letters"] == 0, stats
    depth = snap["streams"][f"orderbook.50.{parse_instrument(BYBIT).symbol}"]
    assert depth["resyncs"] >= 1, depth  # dropped deltas broke the u sequence


def _check_metadata(result, asset: str, check: str) -> dict:
    for e in result.all_events:
        data = e.event_specific_data
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and (
            data.asset_key.path[-1],
            data.check_name,
        ) == (asset, check):
            return {k: v.value for k, v in data.metadata.items()}
    raise AssertionError(f"no {asset}/{check} evaluation")


@pytest.mark.parametrize("inst", [BYBIT, BINANCE])
def test_every_check_passes_on_both_venues(materialised, inst):
    """Every check passes, but those that must not: the Bybit websocket dropped messages (0.2 %
    random drops, 5 % for a while, undetectable live where ids are not consecutive; a dropped
    ``confirm`` kline loses that minute's websocket candle), so the landed rows disagree with
    REST and the archive. ``{trades,candles}_sources_agree`` (WARN) say exactly that: rows only
    in REST or the archive, the websocket missing them, no value mismatch; the partition itself
    is complete (the next test)."""
    result = materialised[inst]
    checks = _checks(result)
    failed = sorted(k for k, ok in checks.items() if not ok)
    for ds in ("trades", "candles"):
        if inst == BYBIT and (ds, f"{ds}_sources_agree") in failed:
            failed.remove((ds, f"{ds}_sources_agree"))
            meta = _check_metadata(result, ds, f"{ds}_sources_agree")
            pairs = meta["pairs"]
            assert all(p["value_mismatches"] == 0 for p in pairs.values()), pairs
            lost = {k: p["only_one_side"] for k, p in pairs.items() if p["only_one_side"]}
            assert lost and set(lost) <= {"archive~ws", "rest~ws"}, pairs
            # the websocket is the side that missed them, never the repair sources
            issues = {e["issue"] for e in meta["first_offending"]}
            assert issues <= {"only in rest", "only in archive"}, meta["first_offending"]
    assert result.success and checks and not failed, _failures(result)
    meta = _metadata(result)
    assert set(meta) == {"trades", "candles", "depth", "funding"}
    assert meta["candles"]["dagster/row_count"] == 1440
    assert meta["funding"]["dagster/row_count"] == 3


def test_no_bybit_trade_is_lost_after_repair(materialised, exchange):
    """Every trade of the day, exactly once, by Bybit's own id; the ingested minutes came
    from the landing zone, the rest from the archive."""
    symbol = parse_instrument(BYBIT).symbol
    formats = exchange.wires["bybit-linear"].formats
    day = exchange.market.day_trades(symbol, DAY)
    expected = [formats.trade_uuid(symbol, a) for a in day.agg_id.tolist()]
    frame = _read(materialised, "trades", BYBIT)
    assert not frame["trade_id"].duplicated().any()
    assert set(frame["trade_id"]) == set(expected), (
        len(set(expected) - set(frame["trade_id"])),
        len(set(frame["trade_id"]) - set(expected)),
    )
    assert frame["exchange"].eq("bybit-linear").all()
    mix = _metadata(materialised[BYBIT])["trades"]["source_mix"]
    assert mix.get("ws", 0) > 0 and sum(mix.values()) == len(expected), mix
    # the Binance day of the same market: its own ids, as many trades
    binance = _read(materialised, "trades", BINANCE)
    assert len(binance) == len(expected) and binance["exchange"].eq("binance").all()


def test_bybit_depth_is_the_exchanges_book_at_every_sample(materialised, exchange):
    """The ingested minutes from the landing zone (ws), the rest of the day and the ingest's
    ledger windows from Bybit's daily book file (archive), and each sample's best bid and ask
    are the local exchange's book on that second, across the cuts and the book-service
    restart."""
    symbol = parse_instrument(BYBIT).symbol
    depth = _read(materialised, "depth", BYBIT)
    assert len(depth), "no Bybit depth"
    depth["ms"] = (depth["snapshot_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(
        milliseconds=1
    )
    assert depth["ms"].max() < DAY_END
    ws = depth["source"] == "ws"
    assert ws.any() and depth.loc[ws, "ms"].min() >= INGEST_FROM_MS
    assert depth.loc[~ws, "source"].eq("archive").all()
    assert (
        depth.loc[~ws, "ms"].min() == DAY_START + 1_000
    )  # 00:00:00 precedes the file's first line
    assert not depth.duplicated(["ms"]).any()  # one row per sample
    depth = depth.sort_values("ms", kind="stable").reset_index(drop=True)
    # the book service restarted once: its update ids start again at 1, and the book with them
    ids = depth["last_update_id"].to_numpy()
    # one restart; the first id after it counts from 1 again (how far depends on how soon the
    # reconnect's snapshot came, in simulated seconds at 30x: a loaded machine gives 3-5)
    back = np.diff(ids) < 0
    assert back.sum() == 1 and ids[np.argmax(back) + 1] <= 10, ids
    spec = exchange.market.spec(symbol)
    unit = spec.tick_units / 10**spec.price_decimals
    # level 0 of each side is its best price
    best_bid, best_ask = (side_matrix(depth, side, width=1)[0][:, 0] for side in ("bid", "ask"))
    ms = depth["ms"].to_numpy()
    # a sample at second t is the book before that second's change (the previous step's)
    steps = (ms // BOOK_STEP_MS - 1).tolist()
    truth = np.array([exchange.market.top_of_book(symbol, s) for s in steps])
    wrong = ~np.isclose(best_bid, truth[:, 0] * unit) | ~np.isclose(best_ask, truth[:, 2] * unit)
    assert not wrong.any(), (int(wrong.sum()), ms[wrong][:5].tolist())
    # one sample a second all day but its first, despite the restart and the cuts
    assert len(depth) == (DAY_END - DAY_START) // 1_000 - 1, len(depth)


def test_bybit_funding_from_rest_and_from_the_tickers(materialised, exchange):
    """The day's three settlements (Bybit's funding history), and the next one as the ingest
    saw it in ``tickers`` (fundingRate, nextFundingTime, markPrice) landed at midnight."""
    symbol = parse_instrument(BYBIT).symbol
    funding = _read(materialised, "funding", BYBIT)
    assert len(funding) == 3 and funding["exchange"].eq("bybit-linear").all()
    times = (funding["funding_time"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    assert sorted(times.tolist()) == exchange.market.funding_times(DAY_START - 1, DAY_END - 1)
    landed = LandingStore(materialised["landing"]).read_frame(
        "bybit-linear", "funding", symbol, INGEST_FROM_MS, DAY_END + 20_001
    )
    assert len(landed) == 1, landed
    row = landed.iloc[0]
    assert row["funding_time"] == pd.Timestamp(DAY_END, unit="ms", tz="UTC")
    assert row["funding_rate"] == exchange.market.funding_rate_e8(symbol, DAY_END) / 1e8
    assert row["mark_price"] > 0 and row["source"] == "ws"
