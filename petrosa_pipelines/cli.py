"""The ``petrosa`` command: local exchange, demo, instance setup, one-off materialisations."""

from __future__ import annotations

import argparse
import sys


def _exchange(argv: list[str]) -> int:
    from petrosa_pipelines.local_exchange.server import main as exchange_main

    return exchange_main(argv)


def _demo(args: argparse.Namespace) -> int:
    from petrosa_pipelines.demo import run_demo

    return run_demo(
        days=args.days,
        symbols=tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip()),
        ui=not args.no_ui,
        port=args.port,
        workdir=args.workdir,
    )


def _instance(args: argparse.Namespace) -> int:
    from petrosa_pipelines.instance import prepare_dagster_home

    print(prepare_dagster_home(args.home))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="petrosa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser(
        "exchange",
        help="the local exchange (Binance USD-M wire formats): petrosa exchange serve --help",
        add_help=False,
    )

    demo = sub.add_parser("demo", help="run the pipeline offline against the local exchange")
    demo.add_argument("--days", type=int, default=3, help="closed days to materialise")
    demo.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    demo.add_argument("--no-ui", action="store_true", help="materialise, report, exit (CI form)")
    demo.add_argument("--port", type=int, default=3000, help="Dagster UI port (127.0.0.1)")
    demo.add_argument("--workdir", default=None, help="where lake, landing and DAGSTER_HOME go")

    inst = sub.add_parser("instance", help="write $DAGSTER_HOME/dagster.yaml")
    inst.add_argument("--home", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "exchange":
        return _exchange(argv[1:])
    args = build_parser().parse_args(argv)
    handlers = {"demo": _demo, "instance": _instance}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
