"""petrosa_pipelines: crypto market data kept complete, correct and analysable, on Dagster.

The Python API for notebooks and services::

    from petrosa_pipelines import load_candles
    result = load_candles("BTCUSDT", "2024-01-02", "2024-01-05", interval="1h")
    result.frame, result.missing_partitions, result.failed_checks

Names are imported lazily so that ``import petrosa_pipelines.exchanges`` stays light.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

#: arrow's allocator, named before anything loads pyarrow (it reads this once, as it loads):
#: jemalloc, which ``lake.lean_memory_pool`` has return freed pages to the OS at once; arrow's
#: default (mimalloc) kept 450 MB of a 10 M-trade day resident after the day was freed
#: (measured). An operator's own choice is kept; Linux wheels of pyarrow ship jemalloc.
if sys.platform == "linux":
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

#: Dagster beta/preview features this project uses on purpose (partitioned asset checks,
#: multi-partition mappings, sensor owners): their warnings would bury every command's output.
#: Matched by message, so a warning about anything else still shows.
KNOWN_DAGSTER_WARNINGS = (
    r"Class `(MultiPartitionMapping|MultiToSingleDimensionPartitionMapping)` is currently in beta",
    r"Parameter `owners` of initializer `\w+Definition.__init__` is currently in beta",
    r"Specifying a partitions_def on an AssetCheckSpec is currently in preview",
)
for _message in KNOWN_DAGSTER_WARNINGS:
    warnings.filterwarnings("ignore", message=_message)

_API = {
    "load_candles": "petrosa_pipelines.api",
    "load_trades": "petrosa_pipelines.api",
    "load_depth": "petrosa_pipelines.api",
    "load_funding": "petrosa_pipelines.api",
    "load_analytics": "petrosa_pipelines.api",
    "load_health": "petrosa_pipelines.api",
    "latest": "petrosa_pipelines.api",
    "LoadResult": "petrosa_pipelines.api",
    "DataError": "petrosa_pipelines.api",
    "materialize_partitions": "petrosa_pipelines.serving.launch",
    "launch_backfill": "petrosa_pipelines.serving.launch",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'petrosa_pipelines' has no attribute {name!r}")
