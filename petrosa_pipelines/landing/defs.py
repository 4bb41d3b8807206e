"""Layers ① to ③ of the code location: the exchange feeds, the ingest job that streams them
and the landing zone it writes (external assets: Dagster does not materialise them)."""

from __future__ import annotations

import dagster as dg


def defs() -> dg.Definitions:
    """One long-running ingest run per (venue, stream group), kept alive by a sensor
    (``sensors/ingest_supervisor.py``), landing every registered venue's feeds."""
    from petrosa_pipelines.catalog.lineage import with_lineage
    from petrosa_pipelines.ingest.job import ingest_job, ingest_stream_group
    from petrosa_pipelines.landing.assets import source_and_landing_specs

    specs = source_and_landing_specs(ingest_stream_group.compute_fn.decorated_fn)
    return dg.Definitions(assets=with_lineage(specs), jobs=[ingest_job])


__all__ = ["defs"]
