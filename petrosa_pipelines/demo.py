"""The demo: the whole pipeline offline against the local exchange.

Starts the local exchange (a deterministic market speaking Binance's wire formats), points
every endpoint setting at it, registers the symbols, materialises the last closed days of every
dataset with their checks and analytics, then streams the websocket ingest for a few seconds
and reads today's data back from the landing zone, printing progress. ``--no-ui`` exits with 0
when everything materialised; the interactive form then serves the Dagster UI and daemon on
127.0.0.1 until Ctrl-C, where the supervisor sensor keeps an ingest run streaming.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from petrosa_pipelines.instance import REPO_ROOT, prepare_dagster_home

DEMO_SEED = 7
DEMO_TRADES_PER_DAY = 20_000
MARKET_JOB = "market_data_job"
#: the demo prints one progress line per partition; Dagster's own log stays in the run's logs
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def demo_days(days: int, today: dt.date | None = None) -> list[dt.date]:
    """The last ``days`` closed UTC days, oldest first."""
    today = today or dt.datetime.now(tz=dt.UTC).date()
    return [today - dt.timedelta(days=n) for n in range(days, 0, -1)]


def _point_settings_at(exchange, workdir: Path) -> dict[str, str]:
    env = {
        "PETROSA_REST_BASE_URL": exchange.rest_base_url,
        "PETROSA_WS_BASE_URL": exchange.ws_base_url,
        "PETROSA_VISION_BASE_URL": exchange.vision_base_url,
        "PETROSA_LAKE_PATH": str(workdir / "lake"),
        "PETROSA_LANDING_PATH": str(workdir / "landing"),
        "PETROSA_WEIGHT_BUDGET_DIR": str(workdir / "weight_budget"),
    }
    os.environ.update(env)
    return env


def _run_partitions(
    job_name: str, keys: Sequence[str], instance, label: str, log=print
) -> list[tuple[str, bool, dict[str, int]]]:
    """Run ``job_name`` for each partition key, one progress line per partition."""
    from petrosa_pipelines.definitions import defs

    job = defs.resolve_job_def(job_name)
    results = []
    started = time.monotonic()
    total_rows = 0
    for n, key in enumerate(keys, start=1):
        t0 = time.monotonic()
        result = job.execute_in_process(
            partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
        )
        rows: dict[str, int] = {}
        for event in result.get_asset_materialization_events():
            mat = event.event_specific_data.materialization
            count = mat.metadata.get("dagster/row_count")
            rows[mat.asset_key.path[-1]] = int(count.value) if count is not None else -1
        checks = [
            e.event_specific_data
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
        ]
        failed_checks = sorted(c.check_name for c in checks if not c.passed)
        total_rows += sum(v for v in rows.values() if v > 0)
        results.append((str(key), result.success, rows))
        rate = total_rows / max(time.monotonic() - started, 1e-9)
        status = "ok" if result.success else "FAILED"
        shown = " ".join(f"{k}={v}" for k, v in sorted(rows.items()))
        check_text = (
            f" checks {len(checks) - len(failed_checks)}/{len(checks)} passed" if checks else ""
        )
        if failed_checks:
            check_text += f" (failed: {', '.join(failed_checks)})"
        log(
            f"{label} [{n}/{len(keys)}] {key} {status} in {time.monotonic() - t0:.1f}s "
            f"{shown}{check_text} | {total_rows} rows, {rate:,.0f} rows/s"
        )
    return results


def materialise_days(
    days: Sequence[dt.date], symbols: Sequence[str], instance, log=print
) -> list[tuple[str, bool, dict[str, int]]]:
    """Market data (with its checks), then analytics, for every symbol-day of ``days``."""
    from petrosa_pipelines.market_data.partitions import SYMBOLS_PARTITIONS_NAME, partition_key

    instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, list(symbols))
    keys = [str(partition_key(day, sym)) for day in days for sym in symbols]
    results = _run_partitions(MARKET_JOB, keys, instance, "market data", log)
    ok_keys = [key for key, ok, _ in results if ok]
    results += _run_partitions("analytics_job", ok_keys, instance, "analytics", log)
    dates = sorted({key.split("|")[0] for key in ok_keys})
    results += _run_partitions("analytics_cross_symbol_job", dates, instance, "correlation", log)
    if os.environ.get("PETROSA_WAREHOUSE_URL"):
        results += _run_partitions("warehouse_job", ok_keys, instance, "warehouse", log)
    return results


def ingest_for(
    seconds: float, exchange, symbols: Sequence[str], landing_path: Path, log=print
) -> dict:
    """Run the websocket ingest against the local exchange for ``seconds``; print what landed."""
    import asyncio

    from petrosa_pipelines.ingest import IngestConfig, IngestEngine
    from petrosa_pipelines.landing import LandingStore
    from petrosa_pipelines.lib.timeutil import day_window_ms, utc_now_ms

    config = IngestConfig(
        group="demo",
        symbols=tuple(symbols),
        landing_path=str(landing_path),
        ws_base_url=exchange.ws_base_url,
        rest_base_url=exchange.rest_base_url,
    )
    engine = IngestEngine(config)

    async def run() -> None:
        task = asyncio.create_task(engine.run())
        await asyncio.sleep(seconds)
        engine.stop()
        await task

    log(f"ingest: streaming {len(engine.stream_names())} streams for {seconds:.0f}s", flush=True)
    asyncio.run(run())
    snap = engine.snapshot()
    received = sum(s["received"] for s in snap["streams"].values())
    failed = sum(s["failed"] for s in snap["streams"].values())
    log(
        f"ingest: {received} messages landed, {failed} failed, "
        f"{snap['group_stats']['dead_letters']} dead letters, "
        f"{snap['group_stats']['gaps_recorded']} gaps recorded"
    )
    store = LandingStore(str(landing_path))
    start, _ = day_window_ms(dt.datetime.now(tz=dt.UTC).date())
    now = utc_now_ms()
    for symbol in symbols:
        counts = {
            ds: len(store.read_frame("binance", ds, symbol, start, now + 1))
            for ds in ("trades", "candles", "depth", "funding")
        }
        log(f"today so far from the landing zone, {symbol}: {counts}")
    return snap


def _serve_ui(port: int, env: dict[str, str]) -> int:
    bin_dir = Path(sys.executable).parent
    full_env = {**os.environ, **env}
    workspace = str(REPO_ROOT / "workspace.yaml")
    web = subprocess.Popen(
        [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", workspace],
        env=full_env,
        cwd=REPO_ROOT,
    )
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", "-w", workspace], env=full_env, cwd=REPO_ROOT
    )
    print(f"\nDagster UI: http://127.0.0.1:{port}  (Ctrl-C stops the demo)", flush=True)
    try:
        while web.poll() is None and daemon.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (web, daemon):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (web, daemon):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


def run_demo(
    days: int = 3,
    symbols: Sequence[str] = ("BTCUSDT", "ETHUSDT"),
    ui: bool = True,
    port: int = 3000,
    workdir: str | None = None,
    ingest_seconds: float = 15.0,
) -> int:
    import dagster as dg

    from petrosa_pipelines.local_exchange import Faults, LocalExchange, MarketConfig

    base = Path(workdir or REPO_ROOT / "data" / "demo").resolve()
    base.mkdir(parents=True, exist_ok=True)
    home = prepare_dagster_home(os.environ.get("DAGSTER_HOME") or base / "dagster_home")
    os.environ["DAGSTER_HOME"] = str(home)
    market = MarketConfig(
        seed=DEMO_SEED,
        symbols=tuple(symbols),
        trades_per_day=DEMO_TRADES_PER_DAY,
        start_date="2024-01-01",
    )
    with LocalExchange(market=market, faults=Faults(), host="127.0.0.1", port=0) as exchange:
        env = _point_settings_at(exchange, base)
        env["PETROSA_SYMBOLS"] = os.environ["PETROSA_SYMBOLS"] = ",".join(symbols)
        print(f"local exchange: {exchange.rest_base_url} (ws {exchange.ws_base_url})")
        print(f"lake: {env['PETROSA_LAKE_PATH']}  DAGSTER_HOME: {home}")
        picked = demo_days(days)
        print(f"materialising {len(picked)} day(s) x {len(symbols)} symbol(s)", flush=True)
        with dg.DagsterInstance.get() as instance:
            results = materialise_days(picked, symbols, instance)
        failed = [key for key, ok, _ in results if not ok]
        if failed:
            print(f"FAILED partitions: {failed}", file=sys.stderr)
            return 1
        print(f"all {len(results)} runs succeeded: market data, checks and analytics materialised")
        if ingest_seconds > 0:
            ingest_for(ingest_seconds, exchange, symbols, base / "landing")
        if not ui:
            return 0
        return _serve_ui(port, {**env, "DAGSTER_HOME": str(home)})
