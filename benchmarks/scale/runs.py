"""Runs per simulated day by kind: the code location's own sensors and schedules, ticked over
one simulated UTC day against an instance in steady state with N instruments.

    python runs.py --n 500 [--tick-floor-s 0] [--hours 24]

Every sensor and schedule is taken from the loaded ``Definitions`` by what it is, not by a
module path, so the simulation follows the code as it stands (the checks layer was being
rewritten while this was written). The daemon is imitated closely enough to count what it
would launch:

- each sensor is evaluated every ``minimum_interval_seconds`` (or ``--tick-floor-s`` when that
  is longer), each schedule at each cron tick, the automation-condition sensor through
  ``dg.evaluate_automation_conditions``; cursors, dynamic-partition requests and the asset
  events a tick returns are applied as the daemon applies them;
- a request whose ``run_key`` the same sensor already used is skipped (the daemon does that);
- a launched run is written as a run record (ingest runs stay STARTED with a fresh heartbeat,
  the others SUCCESS) and its partitions' materialisations and passing check evaluations are
  recorded without a run, so the next ticks see a run that succeeded. The runs' own events
  (steps, logs) are not produced: event-log rows count what the run bodies record.

Time is simulated by an offset added to ``time.time`` (installed before the code location is
imported, so sensors' default ``clock=time.time`` arguments capture it) and to
``petrosa_pipelines.lib.timeutil.utc_now_ms``.
"""

from __future__ import annotations

import time as _time

_REAL_TIME = _time.time
_OFFSET = [0.0]


def _now() -> float:
    return _REAL_TIME() + _OFFSET[0]


def set_clock(ts: float) -> None:
    _OFFSET[0] = ts - _REAL_TIME()


_time.time = _now  # before any module captures it

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import heapq  # noqa: E402
import os  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import petrosa_pipelines.lib.timeutil as _tu  # noqa: E402

_tu.utc_now_ms = lambda: int(_now() * 1000)

from common import emit, event_rows, instrument_ids, land, symbols  # noqa: E402

DAY_S = 86_400


class Sim:
    """The instance, the definitions and the daemon's bookkeeping of one simulated day."""

    def __init__(self, defs: Any, instance: Any, landing: Path) -> None:
        import dagster as dg

        self.dg = dg
        self.defs = defs
        self.instance = instance
        self.landing = landing
        self.repo = defs.get_repository_def()
        self.graph = defs.resolve_asset_graph()
        self.checks_of: dict[Any, list[Any]] = defaultdict(list)
        for ck in self.graph.asset_check_keys:
            self.checks_of[ck.asset_key].append(ck)
        self.cursors: dict[str, Any] = {}
        self.used_keys: set[tuple[str, str]] = set()
        self.counting = False
        self.first: Counter[str] = Counter()
        self.second: Counter[str] = Counter()
        self.runs = self.first
        self.home = Path(os.environ["DAGSTER_HOME"])
        self.first_rows: dict[str, int] = {}
        self.record_checks = True
        self.partitions: Counter[str] = Counter()
        self.ticks: Counter[str] = Counter()
        self.eval_s: Counter[str] = Counter()
        self.errors: dict[str, str] = {}
        self.status: dict[str, str] = {}

    # -- what a run leaves behind ------------------------------------------------------------

    def record_partition(self, key: Any, partition: str | None, checks: bool = True) -> None:
        dg = self.dg
        node = self.graph.get(key) if self.graph.has(key) else None
        if node is None or (partition is None) != (node.partitions_def is None):
            return
        self.instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition))
        specs = self.checks_of.get(key, []) if checks else []
        checks = [
            ck for ck in specs if self.record_checks or self.graph.get_check_spec(ck).blocking
        ]
        if not checks:
            return
        # what the run's own checks record: results that judged THIS materialisation (without
        # the target a result is not current, and automation gated on blocking checks waits)
        from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # internal
            AssetCheckEvaluationTargetMaterializationData as Target,
        )

        flt = dg.AssetRecordsFilter(
            asset_key=key, asset_partitions=[partition] if partition else None
        )
        rec = self.instance.fetch_materializations(flt, limit=1).records[0]
        target = Target(storage_id=rec.storage_id, run_id=rec.run_id, timestamp=rec.timestamp)
        for ck in checks:
            self.instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(
                    asset_key=key,
                    check_name=ck.name,
                    passed=True,
                    partition=partition,
                    target_materialization_data=target,
                )
            )

    def launch(self, name: str, req: Any, job_name: str | None) -> None:
        dg = self.dg
        from dagster._core.utils import make_new_run_id

        if req.run_key:
            if (name, req.run_key) in self.used_keys:
                return
            self.used_keys.add((name, req.run_key))
        tags = {**(req.tags or {}), "dagster/sensor_name": name}
        if req.run_key:
            tags["dagster/run_key"] = req.run_key
        pk = str(req.partition_key) if req.partition_key else None
        if pk:
            tags["dagster/partition"] = pk
        job = req.job_name or job_name or "__ASSET_JOB"
        ingest = "ingest" in job
        run = dg.DagsterRun(
            job_name=job,
            run_id=make_new_run_id(),
            tags=tags,
            status=dg.DagsterRunStatus.STARTED if ingest else dg.DagsterRunStatus.SUCCESS,
        )
        self.instance.add_run(run)
        keys = list(req.asset_selection or [])
        for key in keys:
            self.record_partition(key, pk)
        if self.counting:
            self.runs[name] += 1  # the current half's counter
            self.partitions[name] += max(1, len(keys)) if pk else 0

    def launch_automation(self, name: str, result: Any) -> None:
        """What the daemon launches for an automation tick: the requested asset partitions
        become one run per (partitions definition, partition key) (assets sharing both run
        together; none of these assets has a BackfillPolicy that would range them)."""
        requested = result._requested_asset_partitions  # no public accessor in 1.13.27
        runs: dict[tuple[Any, str | None], list[Any]] = defaultdict(list)
        for ap in requested:
            pdef = self.graph.get(ap.asset_key).partitions_def
            runs[(repr(pdef), ap.partition_key)].append(ap.asset_key)
        for (_, pk), keys in runs.items():
            for key in keys:
                self.record_partition(key, pk)
            if self.counting:
                self.runs[name] += 1
                self.partitions[name] += len(keys)

    def keep_ingest_alive(self) -> None:
        """A STARTED ingest run writes a heartbeat every few seconds; write it for them."""
        dg = self.dg
        try:
            from petrosa_pipelines.ingest.heartbeat import write_heartbeat
            from sensors.ingest_supervisor import EXCHANGE_TAG, GROUP_TAG
        except ImportError:
            return
        for run in self.instance.get_runs(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
        ):
            group = run.tags.get(GROUP_TAG)
            if group:
                exchange = run.tags.get(EXCHANGE_TAG, "binance")
                snap = {"run_id": run.run_id, "written_at": int(_now() * 1000), "liveness": "ok"}
                write_heartbeat(self.landing, exchange, group, snap)

    # -- ticks -------------------------------------------------------------------------------

    def _apply(self, name: str, data: Any, job_name: str | None) -> None:
        for dpr in getattr(data, "dynamic_partitions_requests", None) or []:
            keys = list(dpr.partition_keys)
            if type(dpr).__name__.startswith("Delete"):
                for k in keys:
                    self.instance.delete_dynamic_partition(dpr.partitions_def_name, k)
            else:
                self.instance.add_dynamic_partitions(dpr.partitions_def_name, keys)
        for event in getattr(data, "asset_events", None) or []:
            self.instance.report_runless_asset_event(event)
        for req in getattr(data, "run_requests", None) or []:
            self.launch(name, req, job_name)

    def tick_sensor(self, sensor: Any, now: float) -> None:
        dg = self.dg
        name = sensor.name
        t0 = _REAL_TIME()
        try:
            if type(sensor).__name__ == "AutomationConditionSensorDefinition":
                result = dg.evaluate_automation_conditions(
                    defs=self.defs,
                    instance=self.instance,
                    asset_selection=sensor.asset_selection,
                    evaluation_time=dt.datetime.fromtimestamp(now, tz=dt.UTC),
                    cursor=self.cursors.get(name),
                )
                self.cursors[name] = result.cursor
                self.launch_automation(name, result)
            else:
                if "ingest" in name:
                    self.keep_ingest_alive()
                ctx = dg.build_sensor_context(
                    instance=self.instance,
                    cursor=self.cursors.get(name),
                    repository_def=self.repo,
                    sensor_name=name,
                )
                data = sensor.evaluate_tick(ctx)
                if data.cursor is not None:
                    self.cursors[name] = data.cursor
                try:
                    job = sensor.job_name
                except Exception:  # noqa: BLE001 - asset-selection sensors have no single job
                    job = None
                self._apply(name, data, job)
        except Exception as exc:  # noqa: BLE001 - reported per sensor, the others go on
            self.errors.setdefault(name, f"{type(exc).__name__}: {str(exc)[:300]}")
        if self.counting:
            self.ticks[name] += 1
            self.eval_s[name] += _REAL_TIME() - t0

    def tick_schedule(self, schedule: Any, now: float) -> None:
        dg = self.dg
        name = schedule.name
        t0 = _REAL_TIME()
        try:
            ctx = dg.build_schedule_context(
                instance=self.instance,
                scheduled_execution_time=dt.datetime.fromtimestamp(now, tz=dt.UTC),
                repository_def=self.repo,
            )
            data = schedule.evaluate_tick(ctx)
            self._apply(name, data, schedule.job_name)
        except Exception as exc:  # noqa: BLE001
            self.errors.setdefault(name, f"{type(exc).__name__}: {str(exc)[:300]}")
        if self.counting:
            self.ticks[name] += 1
            self.eval_s[name] += _REAL_TIME() - t0

    def timeline(self, start: float, end: float, floor_s: float) -> list[tuple[float, int, Any]]:
        """Every (time, order, definition) tick of [start, end), in time order."""
        out: list[tuple[float, int, Any]] = []
        for i, s in enumerate(self.repo.sensor_defs):
            self.status[s.name] = str(s.default_status.value)
            step = max(float(s.minimum_interval_seconds or 30), floor_s)
            out += [(start + k * step, i, s) for k in range(int((end - start) // step))]
        for j, sc in enumerate(self.repo.schedule_defs):
            self.status[sc.name] = str(sc.default_status.value)
            from dagster._utils.schedules import cron_string_iterator

            tz = sc.execution_timezone or "UTC"
            for when in cron_string_iterator(start, sc.cron_schedule, tz):
                ts = when.timestamp()
                if ts >= end:
                    break
                out.append((ts, 1000 + j, sc))
        heapq.heapify(out)
        return [heapq.heappop(out) for _ in range(len(out))]

    def run(self, ticks: list[tuple[float, int, Any]], half: float | None = None) -> None:
        """Tick through ``ticks``; from ``half`` on, counts go to the second half's counters."""
        from dagster._core.definitions.partitions.context import partition_loading_context

        for ts, _, d in ticks:
            if half is not None and ts >= half and self.runs is self.first:
                self.runs, self.first_rows = self.second, event_rows(self.home)
            set_clock(ts)
            when = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
            with partition_loading_context(
                effective_dt=when, dynamic_partitions_store=self.instance
            ):
                if hasattr(d, "cron_schedule"):
                    self.tick_schedule(d, ts)
                else:
                    self.tick_sensor(d, ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--tick-floor-s", type=float, default=0.0)
    ap.add_argument("--days-ago", type=int, default=3, help="the simulated day: today - this")
    ap.add_argument(
        "--check-events",
        action="store_true",
        help="record every check of a launched partition, not only the blocking ones (~23 ms each)",
    )
    args = ap.parse_args()

    day = dt.datetime.now(tz=dt.UTC).date() - dt.timedelta(days=args.days_ago)
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()
    home, landing = Path(os.environ["DAGSTER_HOME"]), Path(os.environ["PETROSA_LANDING_PATH"])
    syms, ids = symbols(args.n), instrument_ids(args.n)

    from petrosa_pipelines.local_exchange import LocalExchange, MarketConfig

    exchange = LocalExchange(
        market=MarketConfig(symbols=tuple(syms), trades_per_day=1_000), host="127.0.0.1", port=0
    )
    exchange.__enter__()
    os.environ.update(
        {
            "PETROSA_REST_BASE_URL": exchange.rest_base_url,
            "PETROSA_WS_BASE_URL": exchange.ws_base_url,
            "PETROSA_VISION_BASE_URL": exchange.vision_base_url,
            "PETROSA_SYMBOLS": ",".join(ids),
        }
    )
    set_clock(start - 3600)
    import dagster as dg

    from petrosa_pipelines.definitions import defs
    from petrosa_pipelines.market_data.partitions import SYMBOLS_PARTITIONS_NAME, partition_key

    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, ids)
    land(landing, [day - dt.timedelta(days=1), day], syms)
    sim = Sim(defs, instance, landing)
    sim.record_checks = args.check_events
    t0 = _REAL_TIME()
    # steady state: the day before yesterday built, like every day before it (its check results
    # are not recorded: they gated that day's analytics, which ran before the simulated day)
    for key in sim.graph.get_all_asset_keys():
        if key.path[0] == "market_data":
            for inst in ids:
                pk = str(partition_key(day - dt.timedelta(days=2), inst))
                sim.record_partition(key, pk, checks=False)
    seed_s = _REAL_TIME() - t0
    # warm-up: every definition ticks once just before the day (first-tick behaviour, not counted)
    sim.run(sim.timeline(start - 600, start, 300))
    before = event_rows(home)
    sim.counting = True
    t0 = _REAL_TIME()
    end, half = start + args.hours * 3600, start + args.hours * 1800
    sim.run(sim.timeline(start, end, args.tick_floor_s), half=half)
    sim_s = _REAL_TIME() - t0
    after = event_rows(home)
    mid = sim.first_rows or after
    exchange.__exit__(None, None, None)
    # a day = the first half as simulated (midnight: the window, a daily re-audit) + the second
    # half's steady rate over the rest of the day (exact when --hours 24)
    rest = (24.0 - args.hours / 2) / (args.hours / 2)
    per_day = {
        k: round(sim.first[k] + sim.second[k] * rest) for k in set(sim.first) | set(sim.second)
    }
    rows_first = sum(mid.get(k, 0) - before.get(k, 0) for k in mid)
    rows_second = sum(after.get(k, 0) - mid.get(k, 0) for k in after)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    emit(
        {
            "n": args.n,
            "day": day.isoformat(),
            "hours": args.hours,
            "tick_floor_s": args.tick_floor_s,
            "runs_simulated": dict(sim.first + sim.second),
            "runs_per_day_by_kind": per_day,
            "runs_per_day": sum(per_day.values()),
            "check_events": args.check_events,
            "partitions_requested": dict(sim.partitions),
            "ticks": dict(sim.ticks),
            "eval_s": {k: round(v, 2) for k, v in sim.eval_s.items()},
            "status": sim.status,
            "errors": sim.errors,
            "event_rows_per_day": round(rows_first + rows_second * rest),
            "event_rows_by_type": {k: v for k, v in delta.items() if v},
            "seed_s": round(seed_s, 1),
            "sim_s": round(sim_s, 1),
        }
    )


if __name__ == "__main__":
    main()
