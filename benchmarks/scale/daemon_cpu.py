"""CPU of ``dagster-daemon`` (and the code server it starts, where sensors are evaluated) over
an instance with N instruments in steady state, in real time:

    python daemon_cpu.py --n 500 --minutes 5 [--topology grpc|module]

The topology is the deployed one by default (docker-compose, Helm, ``petrosa stack``): a code
server of its own (``dagster api grpc``) and the daemon reading it through a workspace file;
both process trees are measured. ``--topology module`` runs ``dagster-daemon run -m``, where
the daemon starts its own code server and, every 60 s (``RELOAD_WORKSPACE_INTERVAL`` in
``dagster/_daemon/controller.py``), replaces it with a fresh one that loads the whole code
location again (~6 s of CPU each time): about 10 % of a core that no deployment pays.

Runs are queued but never launched (``max_concurrent_runs: 0``), so the figure is the
daemon's own bookkeeping (sensor and schedule ticks, automation, the run queue), not the runs.
The symbols sensor asks a local exchange listing the N symbols; today has landed for every
instrument and yesterday is taken as built (no window backlog: the once-a-day burst of N
window requests is in the runs simulation, not here).
CPU is read from /proc (utime + stime of the process tree, plus what exited children left
in cutime/cstime) every 10 s (a third of a shorter window) once the daemon is up (every daemon
has beaten its heart and a sensor has ticked) and a further warm-up has passed; the window
runs on until at least one tick fell inside it, so the figure always covers the daemon's
work. For attribution, the ticks each sensor and schedule
recorded in the measured window are listed with the wall seconds they took (the automation
sensor runs in the daemon process, the others in the code server).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from common import emit, instrument_ids, land, symbols

TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds per live process of the tree under ``root`` (a process's own + reaped)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st:
                parents[int(entry)] = int(st[1])
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier += kids
    out = {}
    for pid in tree:
        st = _stat(pid)
        if st:
            out[pid] = sum(int(x) for x in st[11:15]) / TCK
    return out


def tick_seconds(
    instance, t0: float, t1: float, *, finished: bool = False
) -> dict[str, dict[str, float]]:
    """Per sensor / schedule: ticks that started in [t0, t1) (and ended, with ``finished``)
    and the wall seconds they took."""
    out: dict[str, dict[str, float]] = {}
    for state in instance.all_instigator_state():
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=t0)
        ticks = [t for t in ticks if t.timestamp < t1 and (t.end_timestamp or not finished)]
        if ticks:
            took = sum((t.end_timestamp or t1) - t.timestamp for t in ticks)
            out[state.instigator_name] = {"ticks": len(ticks), "wall_s": round(took, 1)}
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_code_server(port: int, proc: subprocess.Popen, deadline_s: float = 600) -> None:
    """Until the code server answers a ping (it loads the whole code location first)."""
    from dagster._grpc.client import DagsterGrpcClient  # no public path in 1.13

    client = DagsterGrpcClient(port=port, host="127.0.0.1")
    t_end = time.monotonic() + deadline_s
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"code server exited with {proc.returncode}")
        try:
            client.ping("")
            return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.5)
    raise RuntimeError(f"code server not up after {deadline_s:.0f} s")


def daemon_up(instance, since: float) -> bool:
    """Every daemon the instance needs has beaten its heart since ``since`` and a sensor or
    schedule tick started since then has finished: the daemon is past its start-up."""
    beats = instance.get_daemon_heartbeats()
    if any(
        t not in beats or beats[t].timestamp < since for t in instance.get_required_daemon_types()
    ):
        return False
    return bool(tick_seconds(instance, since, time.time(), finished=True))


def wait_until(cond, procs: list[subprocess.Popen], deadline_s: float, what: str) -> None:
    """Poll ``cond()`` until true; fail when a process died or ``deadline_s`` passed."""
    t_end = time.monotonic() + deadline_s
    while not cond():
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{what}: a process exited ({[p.returncode for p in procs]})")
        if time.monotonic() > t_end:
            raise RuntimeError(f"{what}: not after {deadline_s:.0f} s")
        time.sleep(0.5)


def start(home: Path, topology: str) -> list[subprocess.Popen]:
    """The processes to measure: [daemon] or [code server, daemon]."""
    bindir = Path(sys.executable).parent
    log = open(home / "daemon.log", "w")  # noqa: SIM115
    kw = {"stdout": log, "stderr": subprocess.STDOUT, "start_new_session": True}
    module = "petrosa_pipelines.definitions"
    if topology == "module":
        return [subprocess.Popen([str(bindir / "dagster-daemon"), "run", "-m", module], **kw)]
    port = free_port()
    code = subprocess.Popen(
        [str(bindir / "dagster"), "api", "grpc", "-h", "127.0.0.1", "-p", str(port), "-m", module,
         "--location-name", "petrosa_pipelines"],
        **kw,
    )  # fmt: skip
    wait_for_code_server(port, code)
    workspace = home / "workspace.yaml"
    server = {"host": "127.0.0.1", "port": port, "location_name": "petrosa_pipelines"}
    workspace.write_text(json.dumps({"load_from": [{"grpc_server": server}]}))
    daemon = subprocess.Popen([str(bindir / "dagster-daemon"), "run", "-w", str(workspace)], **kw)
    return [code, daemon]


def procs_cpu(roots: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for root in roots:
        out.update(tree_cpu(root))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--warmup-s", type=float, default=90)
    ap.add_argument("--topology", choices=("grpc", "module"), default="grpc")
    args = ap.parse_args()
    home, landing = Path(os.environ["DAGSTER_HOME"]), Path(os.environ["PETROSA_LANDING_PATH"])
    syms, ids = symbols(args.n), instrument_ids(args.n)

    from petrosa_pipelines.local_exchange import LocalExchange, MarketConfig

    market = MarketConfig(symbols=tuple(syms), trades_per_day=1_000)
    with LocalExchange(market=market, host="127.0.0.1", port=0) as ex:
        os.environ.update(
            {
                "PETROSA_REST_BASE_URL": ex.rest_base_url,
                "PETROSA_WS_BASE_URL": ex.ws_base_url,
                "PETROSA_VISION_BASE_URL": ex.vision_base_url,
                "PETROSA_SYMBOLS": ",".join(ids),
            }
        )
        import dagster as dg

        from petrosa_pipelines.market_data.partitions import (
            SYMBOLS_PARTITIONS_NAME,
            partition_key,
        )

        instance = dg.DagsterInstance.get()
        instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, ids)
        today = dt.datetime.now(tz=dt.UTC).date()
        land(landing, [today], syms)  # yesterday was built: no backlog of window runs
        for ds in ("candles", "trades", "depth", "funding"):
            for inst in ids:
                pk = str(partition_key(today - dt.timedelta(days=2), inst))
                instance.report_runless_asset_event(
                    dg.AssetMaterialization(dg.AssetKey(["market_data", ds]), partition=pk)
                )
        phases = {"start": time.monotonic()}
        launched = time.time()
        procs = start(home, args.topology)
        daemon, roots = procs[-1], [p.pid for p in procs]
        try:
            phases["up"] = time.monotonic()
            wait_until(lambda: daemon_up(instance, launched), procs, 600, "daemon start-up")
            phases["ready"] = time.monotonic()
            time.sleep(args.warmup_s)
            window = [time.time()]
            samples = []
            every = min(10.0, max(1.0, args.minutes * 20))
            t_end = time.monotonic() + args.minutes * 60
            t_last = t_end + 600  # the window waits this long at most for its first tick
            while all(p.poll() is None for p in procs):
                samples.append((time.monotonic(), procs_cpu(roots)))
                now = time.monotonic()
                if now >= t_last or (
                    now >= t_end and tick_seconds(instance, window[0], time.time(), finished=True)
                ):
                    break
                time.sleep(every)
            samples.append((time.monotonic(), procs_cpu(roots)))
            window.append(time.time())
            alive = all(p.poll() is None for p in procs)  # through the whole window
            phases["measured"] = time.monotonic()
        finally:
            for p in reversed(procs):  # all at once: each takes seconds to shut down
                p.terminate()
            for p in reversed(procs):
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
            phases["stopped"] = time.monotonic()
    (t0, c0), (t1, c1) = samples[0], samples[-1]
    wall = t1 - t0
    used = sum(c1.get(p, 0) - c0.get(p, 0) for p in c1)
    own = c1.get(daemon.pid, 0) - c0.get(daemon.pid, 0)
    code = c1.get(procs[0].pid, 0) - c0.get(procs[0].pid, 0) if len(procs) > 1 else None
    runs = instance.get_runs_count()
    by_sensor: dict[str, int] = {}
    for r in instance.get_runs(limit=100_000):
        k = r.tags.get("dagster/sensor_name") or r.tags.get("dagster/schedule_name") or "other"
        by_sensor[k] = by_sensor.get(k, 0) + 1
    emit(
        {
            "n": args.n,
            "measured_s": round(wall),
            "cpu_s": round(used, 1),
            "cpu_pct_of_core": round(100 * used / wall, 1) if wall else None,
            "topology": args.topology,
            "daemon_process_pct": round(100 * own / wall, 1) if wall else None,
            "code_server_pct": round(100 * code / wall, 1) if wall and code is not None else None,
            "cpu_s_per_min": round(60 * used / wall, 1) if wall else None,
            "runs_queued": runs,
            "runs_by_sensor": by_sensor,
            "tick_wall_s": tick_seconds(instance, *window),
            "daemon_alive": alive,
            "phase_s": {
                b: round(phases[b] - phases[a], 1)
                for a, b in zip(phases, list(phases)[1:], strict=False)
            },
        }
    )


if __name__ == "__main__":
    main()
