"""The ``petrosa`` command: local exchange, demo, instance setup, one-off materialisations."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _exchange(argv: list[str]) -> int:
    from petrosa_pipelines.local_exchange.server import main as exchange_main

    return exchange_main(argv)


def _stack(argv: list[str]) -> int:
    from petrosa_pipelines.tooling.stack import main as stack_main

    return stack_main(argv)


def _demo(args: argparse.Namespace) -> int:
    from petrosa_pipelines.tooling.demo import run_demo

    return run_demo(
        days=args.days,
        symbols=tuple(args.symbols),
        ui=not args.no_ui,
        port=args.port,
        workdir=args.workdir,
        ingest_seconds=args.ingest_seconds,
        stream_depth_day=not args.no_depth_day,
    )


def _live_demo(args: argparse.Namespace) -> int:
    from petrosa_pipelines.tooling.socket_client_feed import live_demo

    live_demo(seconds=args.seconds, symbols=tuple(args.symbols), workdir=args.workdir)
    return 0


def _instance(args: argparse.Namespace) -> int:
    from petrosa_pipelines.tooling.instance import prepare_dagster_home

    print(prepare_dagster_home(args.home))
    return 0


def _catalog(args: argparse.Namespace) -> int:
    import os

    import dagster as dg

    from petrosa_pipelines.catalog.export import export_catalog
    from petrosa_pipelines.definitions import defs

    fmt = "markdown" if args.format in ("md", "markdown") else "json"
    if os.environ.get("DAGSTER_HOME"):
        with dg.DagsterInstance.get() as instance:
            text = export_catalog(defs, fmt, instance=instance)
    else:
        text = export_catalog(defs, fmt)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(text)
    return 0


def _migrate_instruments(args: argparse.Namespace) -> int:
    from petrosa_pipelines.tooling.migrate import main as migrate_main

    return migrate_main(dry_run=args.dry_run)


def _migrate_partitions(args: argparse.Namespace) -> int:
    from petrosa_pipelines.tooling.migrate_partitions import main as migrate_main

    return migrate_main(dry_run=args.dry_run)


def _compact_lake(args: argparse.Namespace) -> int:
    from petrosa_pipelines.tooling.compact_lake import main as compact_main

    return compact_main(dry_run=args.dry_run)


def _migrate_depth(args: argparse.Namespace) -> int:
    from petrosa_pipelines.tooling.migrate_depth import main as migrate_main

    return migrate_main(dry_run=args.dry_run)


def _migration(sub: Any, name: str, text: str) -> None:
    """A migration's subcommand: what it does, and ``--dry-run``."""
    parser = sub.add_parser(name, help=text)
    parser.add_argument(
        "--dry-run", action="store_true", help="print what it would do, change nothing"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``petrosa`` parser; option values are checked by their argparse ``type`` so a bad
    one exits with the option's name and what is allowed (``petrosa_pipelines.lib.argtypes``)."""
    from petrosa_pipelines.lib.argtypes import float_in, instrument_list, int_in

    parser = argparse.ArgumentParser(prog="petrosa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "exchange",
        help="the local exchange (Binance USD-M wire formats): petrosa exchange serve --help",
        add_help=False,
    )

    sub.add_parser(
        "stack",
        help="the production topology on loopback (code server, webserver, daemon, PostgreSQL, "
        "local exchange): petrosa stack --help",
        add_help=False,
    )

    demo = sub.add_parser("demo", help="run the pipeline offline against the local exchange")
    demo.add_argument("--days", type=int_in(1, 366), default=3, help="closed days to materialise")
    demo.add_argument(
        "--symbols",
        type=instrument_list,
        default=("BTCUSDT", "ETHUSDT"),
        help="instrument ids (bybit-linear:BTCUSDT) or bare symbols, taken on both venues",
    )
    demo.add_argument("--no-ui", action="store_true", help="materialise, report, exit (CI form)")
    demo.add_argument(
        "--port", type=int_in(1, 65535), default=3000, help="Dagster UI port (127.0.0.1)"
    )
    demo.add_argument("--workdir", default=None, help="where lake, landing and DAGSTER_HOME go")
    demo.add_argument(
        "--ingest-seconds",
        type=float_in(0.0),
        default=15.0,
        help="stream the ingest this long (0: skip)",
    )
    demo.add_argument(
        "--no-depth-day",
        action="store_true",
        help="skip streaming yesterday through the ingest (then no day has depth or a heatmap)",
    )

    live = sub.add_parser(
        "live-demo",
        help="socket-client feed -> NATS -> ingest -> clean NATS + Redis latest, on the local "
        "exchange (PETROSA_NATS_URL / PETROSA_REDIS_URL, default 127.0.0.1)",
    )
    live.add_argument("--seconds", type=float_in(0.0), default=20.0, help="run this long")
    live.add_argument(
        "--symbols", nargs="+", default=["BTCUSDT"], help="Binance symbols (BTCUSDT ETHUSDT)"
    )
    live.add_argument(
        "--workdir", default=None, help="where the landing goes (default: a temp dir)"
    )

    cat = sub.add_parser("catalog", help="export the catalog from the asset graph")
    cat.add_argument("--format", choices=["json", "markdown", "md"], default="markdown")
    cat.add_argument("--output", "-o", default=None, help="write to a file instead of stdout")

    inst = sub.add_parser("instance", help="write $DAGSTER_HOME/dagster.yaml")
    inst.add_argument("--home", default=None)

    _migration(
        sub,
        "migrate-instruments",
        "rename the instance's bare-symbol partitions (BTCUSDT) to instrument ids "
        "(binance-usdm:BTCUSDT) without rebuilding anything",
    )
    _migration(
        sub,
        "migrate-depth",
        "rewrite the lake's depth files of schema version 1 (one row per level) as "
        "version 2 (one row per snapshot), each proved lossless first",
    )
    _migration(
        sub,
        "migrate-partitions",
        "record the days before the rolling window (PETROSA_DAILY_WINDOW_DAYS) as "
        "instrument-months of market_data/history/*, moving no lake file",
    )
    _migration(
        sub,
        "compact-lake",
        "compact each closed history month of a quiet instrument (day files totalling at "
        "most PETROSA_LAKE_COMPACT_MAX_MB) into one month file, every day proved unchanged",
    )
    return parser


def _quiet_preview_warnings() -> None:
    """Partitioned asset checks and multi-partition mappings are Dagster preview/beta features
    we use on purpose (the list: ``KNOWN_DAGSTER_WARNINGS`` in petrosa_pipelines/__init__.py);
    their warnings would bury the command's output."""
    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_preview_warnings()
    if argv and argv[0] == "exchange":
        return _exchange(argv[1:])
    if argv and argv[0] == "stack":
        return _stack(argv[1:])
    args = build_parser().parse_args(argv)
    handlers = {
        "demo": _demo,
        "live-demo": _live_demo,
        "instance": _instance,
        "catalog": _catalog,
        "migrate-instruments": _migrate_instruments,
        "migrate-depth": _migrate_depth,
        "migrate-partitions": _migrate_partitions,
        "compact-lake": _compact_lake,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
