"""The demo: the whole pipeline offline against the local exchange.

Starts the local exchange (one deterministic market speaking Binance USD-M's and Bybit v5
linear's wire formats on one port), points every venue's endpoint settings at it and registers
the instruments: each ``--symbols`` entry is an instrument id (``bybit-linear:BTCUSDT``) or a
bare symbol, which the demo takes on every venue (``BTCUSDT``: ``binance-usdm:BTCUSDT`` and
``bybit-linear:BTCUSDT``). Then:

1. streams the whole of yesterday (UTC) through the real websocket ingest on the exchange's
   simulated clock, one stream group per venue, as fast as the ingest takes it
   (:func:`stream_day`): the order book has no history to download (neither venue keeps a
   replayable one), so a closed day only has depth, liquidity and a liquidity heatmap if an
   ingest ran through it;
2. materialises the last closed days of every dataset with their checks and analytics (only
   the streamed day has depth; the older ones show what a day from before the ingest looks like);
3. streams the live ingest for a few seconds and summarises today's landed data.

``--no-ui`` exits with 0 when everything materialised; the interactive form then serves the
Dagster UI and daemon on 127.0.0.1 until Ctrl-C, where the supervisor sensor keeps an ingest run
streaming.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from petrosa_pipelines import instruments
from petrosa_pipelines.local_exchange.venues import WIRES
from petrosa_pipelines.tooling.instance import REPO_ROOT, prepare_dagster_home

DEMO_SEED = 7
DEMO_TRADES_PER_DAY = 20_000
#: the demo market's book: 100 levels per side changing once a second (the local exchange's
#: default is Binance's 1000 levels every 100 ms). The depth stream then carries ~86,400 diffs a
#: day per symbol instead of 864,000, which is what lets :func:`stream_day` run in seconds
DEMO_BOOK_LEVELS = 100
DEMO_BOOK_STEP_MS = 1_000
#: the simulated clock advances this much at a time: below the local exchange's 60 s catch-up
#: limit (``MAX_CATCHUP_MS`` in local_exchange/exchange.py), past which it skips data like an outage
STREAM_STEP_MS = 50_000
#: streamed past midnight, so the day's last book sample and trades are landed
STREAM_PAST_MIDNIGHT_MS = 10_000
#: no progress for this long (wall clock) fails the stream: a hang detector, generous for a
#: 2-core CI box shared with a daemon, its runs and a browser (the first second also generates
#: the day's market in the exchange)
STREAM_STALL_S = 300.0
#: how often the exchange's websocket loop looks at the clock while a day streams
STREAM_TICK_S = 0.002
MARKET_JOB = "market_data_job"
#: the demo prints one progress line per partition; Dagster's own log stays in the run's logs
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def demo_days(days: int, today: dt.date | None = None) -> list[dt.date]:
    """The last ``days`` closed UTC days, oldest first."""
    today = today or dt.datetime.now(tz=dt.UTC).date()
    return [today - dt.timedelta(days=n) for n in range(days, 0, -1)]


def demo_start_date(workdir: Path, first_day: dt.date) -> dt.date:
    """The first partition day of the demo: its first day, kept across runs in ``workdir`` so a
    demo re-run on a later day still lists the days an earlier run materialised."""
    marker = workdir / "start_date"
    try:
        earlier = dt.date.fromisoformat(marker.read_text().strip())
    except (FileNotFoundError, ValueError):
        earlier = first_day
    start = min(earlier, first_day)
    marker.write_text(start.isoformat())
    return start


#: the venues the demo streams: every venue the local exchange speaks (its wire registry)
DEMO_VENUES: tuple[str, ...] = tuple(WIRES)
DEMO_SYMBOLS = ("BTCUSDT", "ETHUSDT")


def demo_instruments(entries: Sequence[str], venues: Sequence[str] = DEMO_VENUES) -> list[str]:
    """Instrument ids of ``--symbols``: an id as given, a bare symbol on every demo venue."""
    out: list[str] = []
    for entry in entries:
        targets = venues if instruments.is_legacy_key(entry) else [None]
        for venue in targets:
            text = entry if venue is None else f"{venue}{instruments.VENUE_SEP}{entry}"
            venue_id, symbol = instruments.parse_entry(text)
            if symbol is None:
                raise instruments.InstrumentError(f"{entry!r}: the demo needs symbols, not '*'")
            out.append(instruments.Instrument(venue_id, symbol).id)
    return list(dict.fromkeys(out))


def market_symbols(instrument_ids: Sequence[str]) -> tuple[str, ...]:
    """The local market's symbols: every venue serves the same market for one symbol."""
    return tuple(dict.fromkeys(instruments.parse_instrument(i).symbol for i in instrument_ids))


def local_endpoint_env(base_url: str) -> dict[str, str]:
    """The variables that point every venue the local exchange speaks at it (``base_url``:
    ``http://host:port``), each venue's URLs as its wire places them on the one port."""
    from petrosa_pipelines.settings import endpoint_env

    env: dict[str, str] = {}
    for venue, wire in WIRES.items():
        env.update(endpoint_env(venue, wire.endpoints(base_url)))
    return env


def _point_settings_at(exchange, workdir: Path) -> dict[str, str]:
    env = {
        **local_endpoint_env(exchange.rest_base_url),
        "PETROSA_LAKE_PATH": str(workdir / "lake"),
        "PETROSA_LANDING_PATH": str(workdir / "landing"),
        "PETROSA_WEIGHT_BUDGET_DIR": str(workdir / "weight_budget"),
    }
    os.environ.update(env)
    return env


def _run_partitions(
    job_name: str | None,
    keys: Sequence[str],
    instance,
    label: str,
    log=print,
    assets: Sequence[Any] = (),
) -> list[tuple[str, bool, dict[str, int]]]:
    """Run ``job_name`` (or, without one, just ``assets``) for each partition key, one progress
    line per partition."""
    from petrosa_pipelines.definitions import defs

    job = (
        defs.resolve_job_def(job_name)
        if job_name
        else defs.resolve_implicit_job_def_def_for_assets(list(assets))
    )
    results = []
    started = time.monotonic()
    total_rows = 0
    for n, key in enumerate(keys, start=1):
        t0 = time.monotonic()
        result = job.execute_in_process(
            partition_key=key,
            instance=instance,
            raise_on_error=False,
            run_config=QUIET,
            asset_selection=list(assets) or None,
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


def _health_batch(
    keys: Sequence[str], instance, log=print
) -> list[tuple[str, bool, dict[str, int]]]:
    """``checks/health`` of every partition of ``keys`` in ONE batched audit run, as the
    daemon's ``audit_sensor`` requests it (``checks/batch.py``)."""
    from petrosa_pipelines.checks.batch import AUDIT_JOB_NAME, AUDIT_OP_NAME
    from petrosa_pipelines.definitions import defs

    if not keys:
        return []
    t0 = time.monotonic()
    result = defs.resolve_job_def(AUDIT_JOB_NAME).execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={**QUIET, "ops": {AUDIT_OP_NAME: {"config": {"health_partitions": list(keys)}}}},
    )
    status = "ok" if result.success else "FAILED"
    log(f"health: 1 run for {len(keys)} partitions {status} in {time.monotonic() - t0:.1f}s")
    return [("checks/health (batched)", result.success, {})]


def materialise_days(
    days: Sequence[dt.date], symbols: Sequence[str], instance, log=print
) -> list[tuple[str, bool, dict[str, int]]]:
    """Market data (with its checks), analytics and health, for every instrument-day of
    ``days`` (``symbols``: instrument ids, registered as the ``symbols`` partitions)."""
    from petrosa_pipelines.market_data.partitions import SYMBOLS_PARTITIONS_NAME

    ids = [instruments.instrument_id(sym) for sym in symbols]
    instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, ids)
    keys = [instruments.partition_key_str(day, inst) for day in days for inst in ids]
    results = _run_partitions(MARKET_JOB, keys, instance, "market data", log)
    ok_keys = [key for key, ok, _ in results if ok]
    results += _run_partitions("analytics_job", ok_keys, instance, "analytics", log)
    # what the daemon's audit_sensor does next: one run materialises every partition's health
    results += _health_batch(ok_keys, instance, log)
    dates = sorted({instruments.split_key(key)[0].isoformat() for key in ok_keys})
    results += _run_partitions("analytics_cross_symbol_job", dates, instance, "correlation", log)
    if os.environ.get("PETROSA_WAREHOUSE_URL"):
        results += _run_partitions("warehouse_job", ok_keys, instance, "warehouse", log)
    return results


async def _wait(cond: Callable[[], bool], seconds: float) -> bool:
    """Wait up to ``seconds`` for ``cond``; whether it holds."""
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


async def _until(
    cond: Callable[[], bool], what: str, stall_s: float, state: Callable[[], str] | None = None
) -> None:
    """Wait for ``cond``; fail naming ``what`` (and ``state()``: where each stream stood) after
    ``stall_s`` seconds without it."""
    if not await _wait(cond, stall_s):
        where = f"\n{state()}" if state is not None else ""
        raise RuntimeError(f"demo: {what} not reached within {stall_s:.0f} s{where}")


def _stream_state(engines: Sequence[Any]) -> str:
    """One line per stream of every engine: what a stalled stream day failed on."""
    lines = []
    for engine in engines:
        p, g = engine._primary, engine.stats
        lines.append(
            f"  {engine.config.group}: connection {getattr(p, 'id', None)} frames "
            f"{getattr(p, 'messages', 0):,}, dead letters {g.dead_letters}, connections "
            f"{g.connections_opened}, disconnects {g.disconnects}, books synced "
            f"{sorted(engine.latest_samples)}"
        )
        for name, s in sorted(engine.stats.streams.items()):
            last = s.last_event_ms
            when = (
                "-"
                if last is None
                else f"{dt.datetime.fromtimestamp(last / 1000, dt.UTC):%H:%M:%S}"
            )
            lines.append(
                f"  {engine.config.group} {name} ({s.dataset}): last event {when}, "
                f"{s.received:,} received, connected={engine.connected}"
            )
    return "\n".join(lines)


#: the stream every venue sends about once a second (Binance ``markPrice@1s``, Bybit
#: ``tickers``): how far the ingest got on the simulated clock
CLOCK_DATASET = "funding"


def _progress(engines: Sequence[Any], dataset: str) -> int:
    """The oldest newest event time over every engine's ``dataset`` streams."""
    times = [
        s.last_event_ms or 0
        for engine in engines
        for s in engine.stats.streams.values()
        if s.dataset == dataset
    ]
    return min(times) if times else 0


def demo_ingest_configs(exchange: Any, symbols: Sequence[str], landing_path: Path) -> list[Any]:
    """The demo's ingest against the local exchange: one stream group per venue
    (``demo-<venue>``), each on that venue's endpoints of the one local port."""
    from petrosa_pipelines.ingest import IngestConfig

    return [
        IngestConfig(
            group=f"demo-{venue}",
            exchange=venue,
            symbols=tuple(venue_symbols),
            landing_path=str(landing_path),
            ws_base_url=exchange.ws_base_url,
            rest_base_url=exchange.rest_base_url,
        )
        for venue, venue_symbols in instruments.by_venue(symbols).items()
    ]


def _streams(engines: Sequence[Any]) -> int:
    return sum(len(engine.stream_names()) for engine in engines)


def _received(snaps: Sequence[dict[str, Any]], key: str = "received") -> int:
    return sum(s[key] for snap in snaps for s in snap["streams"].values())


def _group_stat(snaps: Sequence[dict[str, Any]], stat: str) -> int:
    return sum(snap["group_stats"][stat] for snap in snaps)


def stream_day(
    exchange: Any,
    clock: Any,
    day: dt.date,
    symbols: Sequence[str],
    landing_path: Path,
    log: Callable[..., None] = print,
    stall_s: float = STREAM_STALL_S,
) -> dict[str, Any]:
    """Stream the whole UTC ``day`` through the websocket ingest, on the exchange's clock.

    ``symbols`` are instrument ids: one engine per venue, all in one event loop. ``clock`` is
    the exchange's ``SimulatedClock`` and also the ingest's receipt clock (as a deployment's
    clock follows the venue's). It is frozen and moved ``STREAM_STEP_MS`` at a time, each step
    once every engine has received everything up to it: the pace is whatever the machine
    manages, and a slow machine takes longer instead of losing data. Afterwards the clock is
    back on the wall clock at 1x. Returns the engines' final snapshots by venue.
    """
    from petrosa_pipelines.ingest import IngestEngine
    from petrosa_pipelines.lib.timeutil import day_window_ms, utc_now_ms

    start, end = day_window_ms(day)
    stop_at = end + STREAM_PAST_MIDNIGHT_MS
    configs = demo_ingest_configs(exchange, symbols, landing_path)
    clock.set_speed(0.0)
    clock.set(start)
    engines = [IngestEngine(config, clock_ms=clock.now_ms) for config in configs]
    tick, exchange.tick_seconds = exchange.tick_seconds, STREAM_TICK_S

    async def run() -> None:
        tasks = [asyncio.create_task(engine.run()) for engine in engines]

        def ended() -> bool:
            return any(task.done() for task in tasks)

        def state() -> str:
            return _stream_state(engines)

        def reached(t: int) -> Callable[[], bool]:
            return lambda: _progress(engines, CLOCK_DATASET) >= t - 1_000 or ended()

        try:
            await _until(
                lambda: all(e.connected for e in engines) or ended(),
                "ingest connected",
                stall_s,
                state,
            )
            # one second at a time until every book is synced (Binance's REST snapshot is taken
            # at the frozen "now"), so the day's book is sampled from its first seconds
            target = start

            def synced() -> bool:
                return all(set(e.latest_samples) >= set(e.symbols) for e in engines)

            while not synced() and not ended():
                if target - start >= 600_000:
                    raise RuntimeError("demo: the ingest's order books did not sync in 10 min")
                target += 1_000
                clock.set(target)
                await _until(reached(target), "first seconds of the day", stall_s, state)
                await _wait(synced, 1.0)  # the snapshot is fetched at this frozen second
            shown = start
            while target < stop_at and not ended():
                target = min(target + STREAM_STEP_MS, stop_at)
                clock.set(target)
                await _until(
                    reached(target),
                    f"ingest at {dt.datetime.fromtimestamp(target / 1000, dt.UTC):%H:%M:%S}",
                    stall_s,
                    state,
                )
                if target - shown >= 4 * 3_600_000:
                    shown = target
                    hours = (min(target, end) - start) / 3_600_000
                    log(f"depth day {day}: {hours:4.1f} h of 24 streamed", flush=True)
            await _until(
                lambda: _progress(engines, "depth") >= end or ended(), "last diffs", stall_s, state
            )
        finally:
            for engine in engines:
                engine.stop()
            await asyncio.gather(*tasks)

    t0 = time.monotonic()
    log(
        f"depth day {day}: streaming 24 h of {_streams(engines)} streams "
        f"({', '.join(c.exchange for c in configs)}) through the ingest on a simulated clock",
        flush=True,
    )
    try:
        asyncio.run(run())
    finally:
        exchange.tick_seconds = tick
        clock.set(utc_now_ms())
        clock.set_speed(1.0)
    snaps = {c.exchange: e.snapshot() for c, e in zip(configs, engines, strict=True)}
    log(
        f"depth day {day}: {_received(list(snaps.values())):,} messages landed in "
        f"{time.monotonic() - t0:.1f}s, {_group_stat(list(snaps.values()), 'gaps_recorded')} "
        "gaps recorded"
    )
    return snaps


def _streamed_marker(base: Path) -> Path:
    return base / "streamed_days.json"


def _already_streamed(base: Path, day: dt.date, symbols: Sequence[str]) -> bool:
    """True when an earlier demo run in this workdir streamed ``day`` for these symbols."""
    try:
        done = json.loads(_streamed_marker(base).read_text())
    except (OSError, ValueError):
        return False
    return set(symbols) <= set(done.get(day.isoformat(), []))


def _mark_streamed(base: Path, day: dt.date, symbols: Sequence[str]) -> None:
    path = _streamed_marker(base)
    try:
        done = json.loads(path.read_text())
    except (OSError, ValueError):
        done = {}
    done[day.isoformat()] = sorted(set(done.get(day.isoformat(), [])) | set(symbols))
    path.write_text(json.dumps(done, indent=1))


def today_summary(store: Any, instrument: str, start_ms: int, now_ms: int) -> str:
    """One line on what today's landing zone holds for ``instrument`` (an id): counts, times,
    the book."""
    inst = instruments.parse_instrument(instrument)
    frames = {
        ds: store.read_frame(inst.exchange, ds, inst.symbol, start_ms, now_ms + 1)
        for ds in instruments.DATASETS
    }
    trades, depth = frames["trades"], frames["depth"]
    parts = [
        f"{len(trades):,} trades",
        f"{len(frames['candles']):,} closed 1m candles",
        f"{len(depth):,} book samples" + (f" (top {_levels(depth)} levels)" if len(depth) else ""),
        f"{len(frames['funding'])} funding settlements",
    ]
    if len(trades):
        t = _utc(trades["trade_time"])
        parts.append(
            f"trades {t.min():%H:%M:%S}-{t.max():%H:%M:%S} UTC, last {trades['price'].iloc[-1]}"
        )
    if len(depth):
        # one row per sample, levels best first: the last sample's first bid and ask
        last = depth.loc[depth["snapshot_time"].idxmax()]
        bid = _best(last["bid_price"])
        ask = _best(last["ask_price"])
        parts.append(f"book at {_utc(last['snapshot_time']):%H:%M:%S}: {bid} / {ask}")
    return f"today so far from the landing zone, {inst.id}: " + ", ".join(parts)


def _levels(depth: Any) -> int:
    """The most levels a side of any sample holds (the store's top N on a full book); ``depth``
    holds at least one sample."""
    from petrosa_pipelines.catalog.depth_layout import SIDES, level_counts

    return max(int(level_counts(depth, s).max()) for s in SIDES)


def _best(levels: Any) -> float | None:
    """The best price of a side (its first level), None when the side is empty."""
    return float(levels[0]) if len(levels) else None


def _utc(col: Any) -> Any:
    import pandas as pd

    return pd.to_datetime(col, utc=True)


def ingest_for(
    seconds: float, exchange, symbols: Sequence[str], landing_path: Path, log=print
) -> dict[str, dict]:
    """Run the websocket ingest (one group per venue) against the local exchange for
    ``seconds``; print what landed. Returns the engines' snapshots by venue."""
    from petrosa_pipelines.ingest import IngestEngine
    from petrosa_pipelines.landing import LandingStore
    from petrosa_pipelines.lib.timeutil import day_window_ms, utc_now_ms

    configs = demo_ingest_configs(exchange, symbols, landing_path)
    engines = [IngestEngine(config) for config in configs]

    async def run() -> None:
        tasks = [asyncio.create_task(engine.run()) for engine in engines]
        await asyncio.sleep(seconds)
        for engine in engines:
            engine.stop()
        await asyncio.gather(*tasks)

    log(f"ingest: streaming {_streams(engines)} streams for {seconds:.0f}s", flush=True)
    asyncio.run(run())
    snaps = {c.exchange: e.snapshot() for c, e in zip(configs, engines, strict=True)}
    listed = list(snaps.values())
    log(
        f"ingest: {_received(listed)} messages landed, {_received(listed, 'failed')} failed, "
        f"{_group_stat(listed, 'dead_letters')} dead letters, "
        f"{_group_stat(listed, 'gaps_recorded')} gaps recorded"
    )
    store = LandingStore(str(landing_path))
    start, _ = day_window_ms(dt.datetime.now(tz=dt.UTC).date())
    now = utc_now_ms()
    for inst in symbols:
        log(today_summary(store, inst, start, now))
    return snaps


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
    symbols: Sequence[str] = DEMO_SYMBOLS,
    ui: bool = True,
    port: int = 3000,
    workdir: str | None = None,
    ingest_seconds: float = 15.0,
    stream_depth_day: bool = True,
) -> int:
    import dagster as dg

    from petrosa_pipelines.lib.timeutil import utc_now_ms
    from petrosa_pipelines.local_exchange import Faults, LocalExchange, MarketConfig, SimulatedClock

    symbols = demo_instruments(symbols)
    base = Path(workdir or REPO_ROOT / "data" / "demo").resolve()
    base.mkdir(parents=True, exist_ok=True)
    home = prepare_dagster_home(os.environ.get("DAGSTER_HOME") or base / "dagster_home")
    os.environ["DAGSTER_HOME"] = str(home)
    market = MarketConfig(
        seed=DEMO_SEED,
        symbols=market_symbols(symbols),
        trades_per_day=DEMO_TRADES_PER_DAY,
        start_date="2024-01-01",
        book_levels=DEMO_BOOK_LEVELS,
        book_step_ms=DEMO_BOOK_STEP_MS,
    )
    # the exchange's "now": the wall clock, except while stream_day plays yesterday through
    clock = SimulatedClock(utc_now_ms(), speed=1.0)
    with LocalExchange(
        market=market, faults=Faults(), host="127.0.0.1", port=0, clock=clock
    ) as exchange:
        env = _point_settings_at(exchange, base)
        env["PETROSA_SYMBOLS"] = os.environ["PETROSA_SYMBOLS"] = ",".join(symbols)
        print(f"local exchange: {exchange.rest_base_url} (ws {exchange.ws_base_url})")
        print(f"lake: {env['PETROSA_LAKE_PATH']}  DAGSTER_HOME: {home}")
        picked = demo_days(days)
        # partitions start where the demo's data does (not 2024-01-01: "0% filled" everywhere)
        start = demo_start_date(base, picked[0]).isoformat()
        env["PETROSA_START_DATE"] = os.environ["PETROSA_START_DATE"] = start
        if stream_depth_day and _already_streamed(base, picked[-1], symbols):
            print(f"depth day {picked[-1]}: already streamed by an earlier run in {base}")
        elif stream_depth_day:
            snaps = stream_day(exchange, clock, picked[-1], symbols, base / "landing")
            if _group_stat(list(snaps.values()), "gaps_recorded") == 0:
                _mark_streamed(base, picked[-1], symbols)
        print(
            f"materialising {len(picked)} day(s) x {len(symbols)} instrument(s): "
            f"{', '.join(symbols)}",
            flush=True,
        )
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
