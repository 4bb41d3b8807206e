"""The local exchange's command line, and the names callers import from this module.

``python -m petrosa_pipelines.local_exchange serve ...`` starts a :class:`LocalExchange` (the server
is ``exchange.py``; each venue's wire formats live in ``venues/``) with the market, clock and fault
switches given on the command line.
"""

from __future__ import annotations

import argparse
import signal
import threading

from petrosa_pipelines.local_exchange.clock import Clock, SimulatedClock, WallClock
from petrosa_pipelines.local_exchange.config import MarketConfig
from petrosa_pipelines.local_exchange.exchange import MAX_CATCHUP_MS, LocalExchange
from petrosa_pipelines.local_exchange.faults import Faults
from petrosa_pipelines.local_exchange.units import DAY_MS
from petrosa_pipelines.local_exchange.venues.binance.info import exchange_info
from petrosa_pipelines.local_exchange.venues.binance.rest import (
    DEPTH_LIMIT_WEIGHTS,
    HOUR_MS,
    MAX_BAN_SECONDS,
    ApiError,
)

# -- CLI ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The CLI; every option is checked by its argparse ``type`` (a bad value exits with
    ``argument --port: -1 is not between 0 and 65535``, never a traceback)."""
    from petrosa_pipelines.lib.argtypes import float_in, int_in, iso_date, iso_time, symbol_list

    parser = argparse.ArgumentParser(
        prog="python -m petrosa_pipelines.local_exchange",
        description="A local Binance USD-M futures exchange (REST, websocket, Vision archives).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve until Ctrl-C / SIGTERM")
    probability = float_in(0.0, 1.0)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int_in(0, 65535), default=8765)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--symbols", type=symbol_list, default=("BTCUSDT", "ETHUSDT"))
    s.add_argument("--trades-per-day", type=int_in(1), default=20_000)
    s.add_argument("--start-date", type=iso_date, default="2024-01-01")
    s.add_argument(
        "--now", type=iso_time, help="simulated start time (ISO, UTC); default: wall clock"
    )
    s.add_argument(
        "--speed",
        type=float_in(0.0, lo_open=True),
        default=1.0,
        help="market/replay time per real second",
    )
    s.add_argument("--replay", help="a .jsonl recording or a directory of them")
    s.add_argument("--vision-headers", choices=("always", "never", "mixed"), default="always")
    s.add_argument("--weight-limit", type=int_in(1), default=2400)
    s.add_argument("--ping-interval", type=float_in(0.0, lo_open=True), default=180.0)
    s.add_argument(
        "--max-connection-seconds", type=float_in(0.0, lo_open=True), default=24 * 3600.0
    )
    s.add_argument("--fault-seed", type=int, default=0)
    s.add_argument("--fault-disconnect-every", type=int_in(0), default=0)
    s.add_argument("--fault-duplicate", type=probability, default=0.0)
    s.add_argument("--fault-drop", type=probability, default=0.0)
    s.add_argument("--fault-malformed", type=probability, default=0.0)
    s.add_argument("--fault-rate-limit-burst", type=int_in(0), default=0)
    s.add_argument("--fault-slow", type=float_in(0.0), default=0.0)
    s.add_argument("--fault-bad-checksum", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry: ``python -m petrosa_pipelines.local_exchange serve ...``; returns an exit code."""
    args = build_parser().parse_args(argv)
    market = MarketConfig(
        seed=args.seed,
        symbols=tuple(args.symbols),
        trades_per_day=args.trades_per_day,
        start_date=args.start_date,
        vision_headers=args.vision_headers,
    )
    faults = Faults(
        seed=args.fault_seed,
        disconnect_every_n_messages=args.fault_disconnect_every,
        duplicate_probability=args.fault_duplicate,
        drop_probability=args.fault_drop,
        malformed_probability=args.fault_malformed,
        rate_limit_burst=args.fault_rate_limit_burst,
        slow_response_seconds=args.fault_slow,
        bad_checksum=args.fault_bad_checksum,
    )
    clock = SimulatedClock(args.now, speed=args.speed) if args.now else None
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with LocalExchange(
            market=market,
            faults=faults,
            host=args.host,
            port=args.port,
            clock=clock,
            speed=args.speed,
            replay=args.replay,
            weight_limit_per_minute=args.weight_limit,
            ping_interval=args.ping_interval,
            max_connection_seconds=args.max_connection_seconds,
        ) as ex:
            print(f"rest   {ex.rest_base_url}", flush=True)
            print(f"ws     {ex.ws_base_url}", flush=True)
            print(f"vision {ex.vision_base_url}", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


__all__ = [
    "DAY_MS",
    "DEPTH_LIMIT_WEIGHTS",
    "HOUR_MS",
    "MAX_BAN_SECONDS",
    "MAX_CATCHUP_MS",
    "ApiError",
    "Clock",
    "LocalExchange",
    "SimulatedClock",
    "WallClock",
    "build_parser",
    "exchange_info",
    "main",
]
