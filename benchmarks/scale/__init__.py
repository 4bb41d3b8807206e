"""Helpers of ``benchmarks/scale_bench.py``: each module is one measurement in its own process."""
