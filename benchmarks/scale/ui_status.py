"""GraphQL time to load an asset's partition status, as the UI's Partitions tab asks for it:

    python graphql.py --n 500 --days 30

N instruments are registered and ``market_data/trades`` is materialised for N x D instrument-
days. The materialisation rows are bulk-copied in SQL from one real runless materialisation
(only their ``partition`` column and event text differ), because recording 182,500 events one
by one takes over an hour here (~23 ms each); Dagster derives partition status from exactly
those columns (``SqlEventLogStorage.get_materialized_partitions``). A ``dagster-webserver``
is started over the instance and the UI's partition-health query
(dagster-io/dagster ``ui-core/src/assets/usePartitionHealthData.tsx``) is timed cold (first
load builds the asset status cache) and warm, plus ``partitionStats`` (the asset page header).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import emit, event_db, instrument_ids

ASSET = ["market_data", "trades"]
HEALTH_QUERY = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
        ... on DefaultPartitionStatuses {
          materializedPartitions materializingPartitions failedPartitions
        }
        ... on MultiPartitionStatuses {
          primaryDimensionName
          ranges {
            primaryDimStartKey primaryDimEndKey primaryDimStartTime primaryDimEndTime
            secondaryDim {
              ... on TimePartitionStatuses { ranges { status startTime endTime startKey endKey } }
              ... on DefaultPartitionStatuses {
                materializedPartitions materializingPartitions failedPartitions
              }
            }
          }
        }
      }
    }
  }
}
"""
STATS_QUERY = """
query PartitionStats($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      partitionStats { numMaterialized numPartitions numFailed numMaterializing }
    }
  }
}
"""


def seed(n: int, days: int) -> int:
    """Register N instruments and copy a materialisation row to every (day, instrument)."""
    import dagster as dg

    from petrosa_pipelines.market_data.partitions import SYMBOLS_PARTITIONS_NAME

    instance = dg.DagsterInstance.get()
    ids = instrument_ids(n)
    instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, ids)
    today = dt.datetime.now(tz=dt.UTC).date()
    first = f"{today - dt.timedelta(days=1)}|{ids[0]}"
    key = dg.AssetKey(ASSET)
    instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=first))
    home = Path(os.environ["DAGSTER_HOME"])
    with sqlite3.connect(event_db(home)) as con:
        cols = [r[1] for r in con.execute("pragma table_info(event_logs)")]
        row = dict(
            zip(
                cols,
                con.execute(
                    "select * from event_logs where dagster_event_type='ASSET_MATERIALIZATION'"
                ).fetchone(),
                strict=True,
            )
        )
        out = []
        for d in range(1, days + 1):
            day = today - dt.timedelta(days=d)
            for inst in ids:
                pk = f"{day}|{inst}"
                if pk == first:
                    continue
                r = dict(row, id=None, partition=pk, event=row["event"].replace(first, pk))
                out.append(tuple(r[c] for c in cols))
        marks = ",".join("?" * len(cols))
        con.executemany(f"insert into event_logs ({','.join(cols)}) values ({marks})", out)
        total = con.execute(
            "select count(*) from event_logs where dagster_event_type='ASSET_MATERIALIZATION'"
        ).fetchone()[0]
    return int(total)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, query: str) -> tuple[float, dict]:
    body = json.dumps({"query": query, "variables": {"assetKey": {"path": ASSET}}}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as resp:  # noqa: S310 - loopback
        payload = json.loads(resp.read())
    elapsed = time.perf_counter() - t0
    if payload.get("errors"):
        raise RuntimeError(str(payload["errors"])[:500])
    return elapsed, payload["data"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = seed(args.n, args.days)
    seed_s = time.perf_counter() - t0
    port = free_port()
    exe = str(Path(sys.executable).parent / "dagster-webserver")
    log = open(Path(os.environ["DAGSTER_HOME"]) / "webserver.log", "w")  # noqa: SIM115
    server = subprocess.Popen(
        [exe, "-m", "petrosa_pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                post(url, STATS_QUERY)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        cold, data = post(url, HEALTH_QUERY)
        warm = [post(url, HEALTH_QUERY)[0] for _ in range(args.repeat)]
        stats_s, stats = post(url, STATS_QUERY)
        size = len(json.dumps(data))
    finally:
        server.terminate()
        server.wait(30)
    emit(
        {
            "n": args.n,
            "days": args.days,
            "materialized_rows": rows,
            "seed_s": round(seed_s, 1),
            "health_cold_s": round(cold, 2),
            "health_warm_s": round(statistics.median(warm), 2),
            "response_kb": round(size / 1024),
            "stats_s": round(stats_s, 2),
            "stats": stats["assetNodeOrError"].get("partitionStats"),
        }
    )


if __name__ == "__main__":
    main()
