"""Partitions per asset of the real code location, with instruments registered in a real
instance: ``python partitions.py --per-venue 500 --years 5``.

The child is started with ``PETROSA_START_DATE`` = today - years, so the definitions load as
a deployment would ``years`` after its first day (``PETROSA_DAILY_WINDOW_DAYS`` chooses the
scheme: 0 is every day a day partition, the scheme before the rolling window); instruments are
added to the ``symbols`` dynamic partitions of the instance in DAGSTER_HOME
(``market_data/partitions.py``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections import Counter

from common import COUNT_VENUES, DAGSTER_PARTITION_GUIDANCE, emit, instrument_ids


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-venue", type=int, default=500)
    ap.add_argument("--venues", type=int, default=3)
    ap.add_argument("--list-keys", action="store_true", help="also time listing every key")
    args = ap.parse_args()

    import dagster as dg
    from dagster._core.definitions.partitions.context import partition_loading_context

    from petrosa_pipelines.definitions import defs
    from petrosa_pipelines.market_data.partitions import (
        DAILY_WINDOW_DAYS,
        HISTORY_START,
        PARTITIONS_START,
        SYMBOLS_PARTITIONS_NAME,
        monthly_partitions,
    )

    instance = dg.DagsterInstance.get()
    ids = [i for v in COUNT_VENUES[: args.venues] for i in instrument_ids(args.per_venue, v)]
    instance.add_dynamic_partitions(SYMBOLS_PARTITIONS_NAME, ids)
    graph = defs.resolve_asset_graph()
    per_asset: dict[str, int] = {}
    kinds: Counter[str] = Counter()
    # the count runs to today (the open day): read the date on both sides and report it, so a
    # reader (or a test) started before midnight UTC compares against the day that was counted
    day_before = dt.datetime.now(tz=dt.UTC).date()
    with partition_loading_context(dynamic_partitions_store=instance):
        for key in graph.get_all_asset_keys():
            pdef = graph.get(key).partitions_def
            if pdef is None:
                continue
            per_asset[key.to_user_string()] = pdef.get_num_partitions()
            kinds[type(pdef).__name__] += 1
        biggest = max(per_asset, key=per_asset.get)
        list_s = n_keys = None
        if args.list_keys:  # what a sensor iterating every key pays (dagster issue #12441)
            pdef = graph.get(dg.AssetKey.from_user_string(biggest)).partitions_def
            t0 = time.perf_counter()
            n_keys = len(pdef.get_partition_keys())
            list_s = round(time.perf_counter() - t0, 2)
    counted_on = dt.datetime.now(tz=dt.UTC).date()
    if counted_on != day_before:  # midnight passed during the count: count again
        return main()
    over = {k: v for k, v in per_asset.items() if v > DAGSTER_PARTITION_GUIDANCE}
    emit(
        {
            "start_date": HISTORY_START,
            "daily_start": PARTITIONS_START,
            "daily_window_days": DAILY_WINDOW_DAYS,
            "history_months": monthly_partitions.get_num_partitions(),
            "counted_on": counted_on.isoformat(),
            "instruments": len(ids),
            "venues": list(COUNT_VENUES[: args.venues]),
            "partitioned_assets": len(per_asset),
            "assets_over_guidance": len(over),
            "max_per_asset": per_asset[biggest],
            "max_asset": biggest,
            "guidance": DAGSTER_PARTITION_GUIDANCE,
            "ratio_to_guidance": round(per_asset[biggest] / DAGSTER_PARTITION_GUIDANCE, 2),
            "partition_defs": dict(kinds),
            "list_keys_s": list_s,
            "listed_keys": n_keys,
            "per_asset": per_asset,
        }
    )


if __name__ == "__main__":
    main()
