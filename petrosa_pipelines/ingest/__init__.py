"""The long-running websocket ingest: engine (asyncio), statistics, heartbeat, Dagster job.

Import the Dagster job from ``petrosa_pipelines.ingest.job``; this package itself stays free of
Dagster so the engine runs (and is tested and benchmarked) on its own.
"""

from petrosa_pipelines.ingest.config import ALL_DATASETS, IngestConfig
from petrosa_pipelines.ingest.engine import IngestEngine

__all__ = ["ALL_DATASETS", "IngestConfig", "IngestEngine"]
