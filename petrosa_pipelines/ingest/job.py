"""The ``ingest`` job: one run per stream group, running until it is terminated.

A sensor cannot host a websocket (sensor evaluations time out after 60 s), so the loop lives in a
run that the supervisor sensor keeps alive. Ctrl-C, or terminating the run from the UI, sends
SIGINT; the op turns it into a graceful stop: the engine flushes, publishes every open segment
and writes a final heartbeat, and the run ends without a traceback.

A group's frames come from the venue's websocket or from a NATS subject (``source="nats"``,
``ingest/nats_source.py``); the NATS server URL, which may carry a token, is read from the
environment variable ``nats_url_env`` names inside the run, never passed in run config (a
credential-free ``nats_url`` may be). Run tags and metadata name the source and subject.

Stream health (messages, failures, lag, durable-write p99) is reported every
``observe_every_s`` as ``AssetObservation``s on the ``landing/<dataset>`` assets
(``landing/assets.py``), so it shows on their pages in the UI, not only in log lines.
"""

import asyncio
import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

import dagster as dg

from petrosa_pipelines.exchanges import venue_of
from petrosa_pipelines.ingest.config import NATS_KEYS, IngestConfig
from petrosa_pipelines.ingest.engine import IngestEngine
from petrosa_pipelines.instruments import (
    DATASETS,
    InstrumentError,
    normalise_symbol,
    parse_instrument,
)
from petrosa_pipelines.landing.assets import landing_observations
from petrosa_pipelines.landing.writer import WriterConfig
from petrosa_pipelines.settings import (
    NATS_URL_VAR,
    SOCKET_CLIENT_SUBJECT,
    SettingError,
    mask_nats_url,
    nats_url_has_credentials,
)

INGEST_JOB_NAME = "ingest"
#: run tag naming the stream group of an ingest run (the supervisor's mutual-exclusion key)
GROUP_TAG = "petrosa/ingest_group"
EXCHANGE_TAG = "petrosa/exchange"
#: run tags naming where the frames come from (``websocket`` or ``nats``) and the NATS subject
#: and JetStream stream (never the server URL: it may carry credentials)
SOURCE_TAG = "petrosa/ingest_source"
NATS_SUBJECT_TAG = "petrosa/nats_subject"
NATS_STREAM_TAG = "petrosa/nats_stream"


class IngestRunConfig(dg.Config):
    """What one ingest run streams. Unset endpoints and paths come from ``PETROSA_*`` settings."""

    group: str
    symbols: list[str]
    exchange: str = "binance"
    datasets: list[str] = list(DATASETS)
    landing_path: str | None = None
    ws_base_url: str | None = None
    rest_base_url: str | None = None
    max_connection_age_s: float = 23 * 3600.0
    heartbeat_interval_s: float = 5.0
    metrics_port: int | None = None
    segment_max_age_s: float = 15.0
    #: follow the ``symbols`` dynamic partitions (intersected with ``symbols`` unless empty)
    follow_dynamic_symbols: bool = False
    #: stop on its own after this many seconds (demos, tests); None: until terminated
    max_runtime_s: float | None = None
    #: stop on its own once this many messages were processed (tests that must not depend on
    #: how fast a loaded machine delivers them; ``max_runtime_s`` stays the deadline)
    max_messages: int | None = None
    #: log a statistics line every this many seconds
    log_every_s: float = 60.0
    #: report stream health on the landing assets every this many seconds (and at the stop)
    observe_every_s: float = 60.0
    #: the venue's stream profile (``IngestConfig.stream_profile``; empty: its default)
    stream_profile: str = ""
    #: ``websocket`` or ``nats`` (``IngestConfig.source``)
    source: str = "websocket"
    #: a NATS URL without credentials; None: the one in the variable ``nats_url_env`` names
    nats_url: str | None = None
    nats_url_env: str = NATS_URL_VAR
    nats_subject: str = SOCKET_CLIENT_SUBJECT
    nats_stream: str | None = None
    #: None: ``petrosa-<group>``
    nats_durable: str | None = None
    nats_deliver_policy: str = "all"


def engine_config(cfg: IngestRunConfig) -> IngestConfig:
    """The engine's config from the run config plus settings for what the run left unset."""
    from petrosa_pipelines.settings import from_env

    settings = from_env()
    endpoints = settings.endpoints_for(cfg.exchange)
    if cfg.nats_url and nats_url_has_credentials(cfg.nats_url):
        raise SettingError(
            "nats_url",
            mask_nats_url(cfg.nats_url),
            f"a URL without credentials in run config (put them in {cfg.nats_url_env})",
        )
    nats: dict[str, Any] = {}
    if cfg.source == "nats":
        nats = {k: getattr(cfg, k) for k in NATS_KEYS if getattr(cfg, k) is not None}
    return IngestConfig(
        group=cfg.group,
        symbols=tuple(cfg.symbols),
        datasets=tuple(cfg.datasets),
        exchange=cfg.exchange,
        landing_path=cfg.landing_path or settings.landing_path,
        ws_base_url=cfg.ws_base_url or endpoints.ws_base_url,
        rest_base_url=cfg.rest_base_url or endpoints.rest_base_url,
        max_connection_age_s=cfg.max_connection_age_s,
        heartbeat_interval_s=cfg.heartbeat_interval_s,
        metrics_port=cfg.metrics_port,
        writer=WriterConfig(segment_max_age_s=cfg.segment_max_age_s),
        stream_profile=cfg.stream_profile,
        source=cfg.source,
        **nats,
    )


def source_tags(source: str, nats_subject: str | None, nats_stream: str | None) -> dict[str, str]:
    """The run tags naming a group's source (what the supervisor and the UI filter on)."""
    tags = {SOURCE_TAG: source}
    if source == "nats":
        tags[NATS_SUBJECT_TAG] = nats_subject or SOCKET_CLIENT_SUBJECT
        if nats_stream:
            tags[NATS_STREAM_TAG] = nats_stream
    return tags


def venue_symbols(registered: Iterable[str], venue: str, wanted: Collection[str]) -> list[str]:
    """The symbols of ``venue`` among the registered ``symbols`` partitions, within ``wanted``.

    Registered values are instrument ids (``bybit-linear:BTCUSDT``) or, from before venues
    had ids, bare symbols (Binance USD-M's); values that are neither are ignored. An empty
    ``wanted`` keeps every one of the venue's.
    """
    out: set[str] = set()
    for value in registered:
        try:
            inst = parse_instrument(value)
        except InstrumentError:
            continue
        if inst.venue == venue and (not wanted or inst.symbol in wanted):
            out.add(inst.symbol)
    return sorted(out)


def _stop_on_interrupt(stop: Callable[[], None]) -> Callable[[], bool]:
    """Turn SIGINT (Ctrl-C, or Dagster's run termination) into a graceful engine stop.

    Dagster's own handler raises an exception wherever the op happens to be, which prints a
    traceback and records the run as a failure although the engine would have stopped cleanly
    (flush, publish segments, final heartbeat). Returns "was a stop requested?". Only the main
    thread may own signal handlers; elsewhere the previous behaviour stays.
    """
    interrupted = [False]

    def on_interrupt() -> None:
        interrupted[0] = True
        stop()

    if threading.current_thread() is threading.main_thread():
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, on_interrupt)
    return lambda: interrupted[0]


async def _until_processed(
    engine: IngestEngine, task: asyncio.Task, count: int, deadline_s: float | None
) -> None:
    """Stop the engine once it processed ``count`` messages (or at the deadline, if any)."""
    loop = asyncio.get_running_loop()
    end = None if deadline_s is None else loop.time() + deadline_s
    while not task.done():
        processed = sum(s["processed"] for s in engine.snapshot()["streams"].values())
        if processed >= count or (end is not None and loop.time() >= end):
            engine.stop()
            return
        await asyncio.wait({task}, timeout=0.1)


def _metadata(snap: dict[str, Any]) -> dict[str, Any]:
    streams = snap["streams"]
    source = snap.get("source") or {"kind": "websocket"}
    return {
        "liveness": snap["liveness"],
        "source": source["kind"],
        **({"nats": dg.MetadataValue.json(source)} if source["kind"] == "nats" else {}),
        "messages_processed": sum(s["processed"] for s in streams.values()),
        "messages_failed": sum(s["failed"] for s in streams.values()),
        "duplicates_dropped": sum(s["duplicates"] for s in streams.values()),
        "lines_durable": snap["writer"]["lines_durable"],
        "durable_latency_p99_ms": snap["writer"]["latency_p99_ms"] or 0,
        **{k: v for k, v in snap["group_stats"].items()},
        "streams": dg.MetadataValue.json(
            {
                n: {k: s[k] for k in ("received", "processed", "failed", "lag_ms", "status")}
                for n, s in streams.items()
            }
        ),
    }


def _reporters(
    context: dg.OpExecutionContext, config: IngestRunConfig
) -> tuple[Callable[[dict[str, Any]], None], Callable[[dict[str, Any]], None]]:
    """(on_heartbeat, observe): a statistics line every ``log_every_s``, and stream health as
    observations of the landing assets every ``observe_every_s`` (``observe`` does it now)."""
    last_log = [0.0]
    last_observed = [time.monotonic()]

    def observe(snap: dict[str, Any]) -> None:
        for observation in landing_observations(snap):
            context.log_event(observation)

    def on_heartbeat(snap: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - last_observed[0] >= config.observe_every_s:
            last_observed[0] = now
            observe(snap)
        if now - last_log[0] >= config.log_every_s:
            last_log[0] = now
            m = _metadata(snap)
            context.log.info(
                f"ingest {config.group}: {m['liveness']}, processed={m['messages_processed']} "
                f"failed={m['messages_failed']} reconnects={m['reconnects']} "
                f"gaps={m['gaps_recorded']} p99={m['durable_latency_p99_ms']}ms"
            )

    return on_heartbeat, observe


@dg.op(
    description="Stream one group's websockets into the landing zone until terminated.",
    out=dg.Out(dg.Nothing),
    tags={"kind": "websocket"},
)
def ingest_stream_group(context: dg.OpExecutionContext, config: IngestRunConfig) -> None:
    cfg = engine_config(config)
    venue = venue_of(cfg.exchange)
    wanted = {normalise_symbol(venue, s) for s in cfg.symbols}

    def dynamic_symbols() -> list[str]:
        return venue_symbols(context.instance.get_dynamic_partitions("symbols"), venue, wanted)

    on_heartbeat, observe = _reporters(context, config)
    if config.follow_dynamic_symbols:
        initial = dynamic_symbols() or sorted(wanted)
        if not initial:
            raise dg.Failure(f"ingest {cfg.group}: no symbols (allow-list and partitions empty)")
        cfg = dataclasses.replace(cfg, symbols=tuple(initial))
    engine = IngestEngine(
        cfg,
        run_id=context.run_id,
        symbols_provider=dynamic_symbols if config.follow_dynamic_symbols else None,
        on_heartbeat=on_heartbeat,
    )

    async def main() -> None:
        stop_requested = _stop_on_interrupt(engine.stop)
        task = asyncio.create_task(engine.run())
        if config.max_messages is not None:
            await _until_processed(engine, task, config.max_messages, config.max_runtime_s)
        elif config.max_runtime_s is not None:
            done, _ = await asyncio.wait({task}, timeout=config.max_runtime_s)
            if not done:
                engine.stop()
        await task
        if stop_requested():
            context.log.info(f"ingest {cfg.group}: interrupted (Ctrl-C or terminate), stopped")

    src = engine.source_info()
    where = (
        f"nats {src['hosts']} subject {src['subject']}" if src["kind"] == "nats" else "websocket"
    )
    context.log.info(f"ingest {cfg.group}: streams {engine.stream_names()} from {where}")
    previous = signal.getsignal(signal.SIGINT)
    try:
        asyncio.run(main())
    finally:
        # asyncio resets SIGINT to Python's default when its loop closes: give Dagster its own
        # handler back (it turns a later interrupt into a clean run termination)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
        # a termination interrupts asyncio.run; the engine's own shutdown ran inside it, but
        # make sure the segments are published even if it was cut short
        if engine.writer.alive:
            engine.writer.close()
        snap = engine.last_snapshot or engine.snapshot()
        observe(snap)
        context.add_output_metadata(_metadata(snap))
        context.log.info(f"ingest {cfg.group} stopped cleanly: {_metadata(snap)}")


@dg.job(
    name=INGEST_JOB_NAME,
    description="Long-running websocket ingest of one stream group (kept alive by a sensor).",
    tags={"petrosa/long_running": "true"},
)
def ingest_job() -> None:
    ingest_stream_group()


def run_config_for(
    group: str, symbols: list[str], datasets: list[str] | None = None, **overrides: Any
) -> dict[str, Any]:
    """The run config of an ingest run (what the supervisor sensor sends)."""
    op_config: dict[str, Any] = {"group": group, "symbols": list(symbols), **overrides}
    if datasets is not None:
        op_config["datasets"] = list(datasets)
    return {"ops": {"ingest_stream_group": {"config": op_config}}}
