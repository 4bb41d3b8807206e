"""Our own small great-expectations 1.x factory (dagster-ge is pinned before GX 1.0).

Suites are versioned JSON files in ``checks/suites/<dataset>.json`` (bump ``version`` when an
expectation changes meaning). A list column (depth's levels) reaches a suite as each cell's
length (``suite_frame``): level order and signs are the depth checks' (``audit_book``) to judge.
GX is imported lazily (about 2 s) and its ephemeral context,
data sources and suites are built once per process: GX refuses a second data source of the
same name, and its tqdm progress bars would otherwise print to every compute log.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from petrosa_pipelines.catalog.schemas import DATASETS, LEVELS
from petrosa_pipelines.market_data.fill import trade_ids_are_agg_ids

SUITES_PACKAGE = "petrosa_pipelines.checks.suites"
_LOCK = threading.Lock()
_RUNNER: GxRunner | None = None


def load_suite_spec(dataset: str) -> dict[str, Any]:
    """The versioned suite of ``dataset`` as stored in the repo."""
    path = resources.files(SUITES_PACKAGE).joinpath(f"{dataset}.json")
    if not path.is_file():
        raise ValueError(f"no great-expectations suite for dataset {dataset!r}")
    spec = json.loads(path.read_text())
    if spec.get("dataset") != dataset or not isinstance(spec.get("version"), int):
        raise ValueError(f"suite {dataset}.json needs matching 'dataset' and integer 'version'")
    return spec


def suite_frame(dataset: str, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as its suite sees it: each list column as its cells' lengths (int64).

    GX fingerprints a batch with ``pd.util.hash_pandas_object`` and pickles the whole frame
    when a cell is unhashable: a day of depth (345,600 level arrays) took 30 s that way, 0.2 s
    with the lengths. The lengths still let a suite hold a side's price and quantity lists to
    the same count.
    """
    schema = DATASETS.get(dataset)
    if dataset == "trades" and trade_ids_are_agg_ids(frame):
        # Binance: each trade_id is its aggregate id's text, so the ids hold the same nulls
        # and repeats; GX's uniqueness over 10 M texts hashed them all (over 1 GB, measured),
        # over the int64 ids it needs a quarter of that
        return frame.assign(trade_id=frame["agg_trade_id"])
    lists = [c.name for c in schema.columns if c.type == LEVELS] if schema else []
    lists = [c for c in lists if c in frame.columns]
    if not lists:
        return frame
    return frame.assign(**{c: _lengths(frame[c]) for c in lists})


def _lengths(column: pd.Series) -> np.ndarray:
    cells = column.to_numpy(dtype=object)
    return np.fromiter(
        (0 if c is None else len(c) for c in cells), dtype=np.int64, count=len(cells)
    )


def _class_name(expectation_type: str) -> str:
    return "".join(part.capitalize() for part in expectation_type.split("_"))


@dataclass(frozen=True)
class GxSummary:
    """What a suite said about one frame, flattened for check metadata."""

    suite: str
    version: int
    success: bool
    evaluated: int
    failed: int
    results: list[dict[str, Any]] = field(default_factory=list)


class GxRunner:
    """An ephemeral GX context with one pandas data asset and suite per dataset."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self._source = self.context.data_sources.add_pandas("petrosa")
        self._batches: dict[str, Any] = {}
        self._suites: dict[str, tuple[Any, int]] = {}

    def _prepare(self, dataset: str) -> tuple[Any, Any, int]:
        if dataset not in self._suites:
            import great_expectations.expectations as gxe

            spec = load_suite_spec(dataset)
            expectations = [
                getattr(gxe, _class_name(e["type"]))(**e.get("kwargs", {}))
                for e in spec["expectations"]
            ]
            name = f"{dataset}.v{spec['version']}"
            suite = self.context.suites.add(
                self._gx.ExpectationSuite(name=name, expectations=expectations)
            )
            asset = self._source.add_dataframe_asset(dataset)
            self._batches[dataset] = asset.add_batch_definition_whole_dataframe("whole")
            self._suites[dataset] = (suite, spec["version"])
        suite, version = self._suites[dataset]
        return self._batches[dataset], suite, version

    def validate(self, dataset: str, frame: pd.DataFrame) -> GxSummary:
        """Run the dataset's suite over the whole frame (BASIC result format: counts only)."""
        batch_def, suite, version = self._prepare(dataset)
        frame = suite_frame(dataset, frame)
        try:
            res = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(
                suite, result_format="BASIC"
            )
        finally:
            self._release()
        rows = []
        for r in res.results:
            kwargs = r.expectation_config.kwargs
            rows.append(
                {
                    "expectation": r.expectation_config.type,
                    "column": kwargs.get("column") or kwargs.get("column_A"),
                    "success": bool(r.success),
                    "unexpected_count": r.result.get("unexpected_count"),
                    "unexpected_percent": r.result.get("unexpected_percent"),
                }
            )
        failed = sum(not r["success"] for r in rows)
        return GxSummary(suite.name, version, bool(res.success), len(rows), failed, rows)

    def _release(self) -> None:
        """Drop what GX's engine keeps of the last validation: the batch and its frame, and
        the metrics computed on it (a mask per row and expectation). A day of trades would
        otherwise stay alive until the next validation in this process (in-process runs,
        batched audits, a history month's days): 700 MB of 10 M trades, measured."""
        engine = self._source.get_execution_engine()
        engine.batch_manager.reset_batch_cache()
        engine.batch_manager.batch_data_cache.clear()
        cache = getattr(engine, "_metric_cache", None)  # no public reset in GX 1.x
        if isinstance(cache, dict):
            cache.clear()


def runner() -> GxRunner:
    """The process-wide runner, built on first use."""
    global _RUNNER
    with _LOCK:
        if _RUNNER is None:
            _RUNNER = GxRunner()
        return _RUNNER


def validate_frame(dataset: str, frame: pd.DataFrame) -> GxSummary:
    """Validate one partition's frame against the dataset's versioned suite."""
    r = runner()
    with _LOCK:  # GX contexts are not documented as thread-safe
        return r.validate(dataset, frame)
