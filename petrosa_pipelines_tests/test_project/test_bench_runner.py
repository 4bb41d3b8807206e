"""``benchmarks/run_all.py --quick`` gives every benchmark its small size: a script missing from
its table ran at full size (a 10-million-trade day, a million frames) in a "quick" run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_every_benchmark_has_quick_arguments():
    spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_all)
    scripts = {p.name for p in run_all.scripts()}
    assert len(scripts) >= 10
    assert scripts == set(run_all.QUICK_ARGS), scripts ^ set(run_all.QUICK_ARGS)
    assert all(run_all.QUICK_ARGS[s] for s in scripts)
