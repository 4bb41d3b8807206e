"""Partitions rebuilt from the landing zone, with holes filled from archives in failover order."""

import datetime as dt

import orjson
import pandas as pd

from petrosa_pipelines.landing import GapRecord, LandingWriter
from petrosa_pipelines.lib.timeutil import HOUR_MS, day_start_ms
from petrosa_pipelines.market_data.assets import MarketDataConfig, materialise_partition

DAY = dt.date(2024, 3, 3)
START = day_start_ms(DAY)


def agg_trade_frames(trades: pd.DataFrame, symbol: str) -> list[tuple[int, bytes]]:
    """The market's trades as Binance combined-stream aggTrade frames (receipt = trade time)."""
    out = []
    for row in trades.itertuples(index=False):
        data = {
            "e": "aggTrade",
            "E": int(row.trade_time) + 5,
            "a": int(row.agg_trade_id),
            "s": symbol,
            "p": str(row.price),
            "q": str(row.quantity),
            "f": int(row.first_trade_id),
            "l": int(row.last_trade_id),
            "T": int(row.trade_time),
            "m": bool(row.is_buyer_maker),
        }
        frame = {"stream": f"{symbol.lower()}@aggTrade", "data": data}
        out.append((int(row.trade_time) + 7, orjson.dumps(frame)))
    return out


def land(root, frames, gaps=()):
    with LandingWriter(root, "binance", "test") as writer:
        for recv, raw in frames:
            assert writer.put(recv, raw)
        for gap in gaps:
            writer.record_gap(gap)


def test_landed_trades_with_a_hole_are_completed_from_the_archive(
    tmp_path, local_exchange, exchange_resource
):
    from resources import LandingResource

    market = local_exchange.market.trades("BTCUSDT", DAY)
    trade_ms = market["trade_time"].to_numpy()
    hole = (trade_ms >= START + 5 * HOUR_MS) & (trade_ms < START + 6 * HOUR_MS)
    landed = market[(trade_ms < START + 12 * HOUR_MS) & ~hole]
    land(tmp_path, agg_trade_frames(landed, "BTCUSDT"))

    frame, meta = materialise_partition(
        "trades",
        f"{DAY}|BTCUSDT",
        MarketDataConfig(),
        exchange_resource,
        LandingResource(root=str(tmp_path)),
    )
    assert len(frame) == len(market)
    assert (frame["agg_trade_id"].diff().dropna() == 1).all()
    assert meta["source_mix"].value == {"archive": len(market) - len(landed), "ws": len(landed)}
    assert meta["missing_range_count"] == 0
    # the websocket rows keep their receipt time; history rows carry none
    ws_rows = frame[frame["source"] == "ws"]
    assert ws_rows["received_at"].notna().all()
    assert frame.loc[frame["source"] == "archive", "received_at"].isna().all()


def test_gap_ledger_entry_forces_a_refill_even_where_ids_look_continuous(
    tmp_path, local_exchange, exchange_resource
):
    """A disconnect recorded by the ingest is repaired although the landed ids are gapless."""
    from resources import LandingResource

    market = local_exchange.market.trades("ETHUSDT", DAY)
    land(
        tmp_path,
        agg_trade_frames(market, "ETHUSDT"),
        gaps=[
            GapRecord(
                "trades",
                "ETHUSDT",
                START + HOUR_MS,
                START + 2 * HOUR_MS,
                "disconnect",
                START + 2 * HOUR_MS,
            )
        ],
    )
    frame, meta = materialise_partition(
        "trades",
        f"{DAY}|ETHUSDT",
        MarketDataConfig(),
        exchange_resource,
        LandingResource(root=str(tmp_path)),
    )
    assert meta["ledger_gaps"] == 1
    tried = [a["source"] for a in meta["sources_tried"].value]
    assert tried == ["ws", "archive"]
    assert len(frame) == len(market)
    assert meta["source_mix"].value == {"ws": len(market)}  # same rows: the first source wins
