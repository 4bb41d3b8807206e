"""``benchmarks/suite_time.py``'s pure parts: the CPU-seconds it reads from ``/proc/stat`` and
the counts it reads from pytest's summary line (the README's suite times come from them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "suite_time.py"


@pytest.fixture(scope="module")
def suite_time():
    spec = importlib.util.spec_from_file_location("suite_time", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while it is defined
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_cpu_seconds_counts_idle_and_iowait_as_idle_and_the_rest_as_busy(suite_time):
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    stat = "cpu  1000 50 300 7000 200 10 40 5 400 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n"
    busy, idle = suite_time.cpu_seconds(stat)
    assert busy == pytest.approx((1000 + 50 + 300 + 10 + 40 + 5) / 100)
    assert idle == pytest.approx((7000 + 200) / 100)


def test_cpu_seconds_refuses_a_file_without_the_cpu_line_first(suite_time):
    with pytest.raises(ValueError, match="'cpu' line"):
        suite_time.cpu_seconds("intr 1 2 3\ncpu 1 2 3 4 5 6 7 8\n")


def test_summary_counts_reads_the_last_summary_line(suite_time):
    out = (
        "test_x.py::test_about_42 passed\n"
        "== 1 failed, 3 passed in 2.0s ==\n"  # an earlier lane's line is not the last
        "=========== 1689 passed, 4 skipped, 5 warnings in 425.31s (0:07:05) ============\n"
    )
    assert suite_time.summary_counts(out) == {"passed": 1689, "skipped": 4, "warnings": 5}
    assert suite_time.summary_counts("no tests ran in 0.1s") == {}


def test_an_unknown_lane_is_refused_by_name(suite_time):
    with pytest.raises(SystemExit, match="--lanes: unknown"):
        suite_time.main(["--lanes", "fast,slowest"])
