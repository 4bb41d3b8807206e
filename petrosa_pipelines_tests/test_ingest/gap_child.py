"""A landing writer that records a burst of gap entries, reports them durable, then keeps
landing frames until it is killed (for the kill -9 test of the gap ledger).

Usage: python -m petrosa_pipelines_tests.test_ingest.gap_child ROOT N
Prints ``durable <count>`` once ``wait_gaps_durable`` returned, then numbers of frames.
"""

from __future__ import annotations

import sys
import time

from petrosa_pipelines.landing.records import GapRecord
from petrosa_pipelines.landing.writer import LandingWriter

T0 = 1_704_240_000_000


def main() -> None:
    root, n = sys.argv[1], int(sys.argv[2])
    writer = LandingWriter(root, "binance", "kill").start()
    for i in range(n):
        gap = GapRecord(
            "trades", "BTCUSDT", T0 + i, T0 + i + 5, "id_gap", T0 + 10_000, "kill", f"#{i}"
        )
        while not writer.record_gap(gap):
            time.sleep(0.001)
    sys.stdout.write(f"durable {writer.wait_gaps_durable(timeout=120)}\n")
    sys.stdout.flush()
    seq = 0
    while True:  # keep the writer busy (open segments, fsyncs) until the kill
        now = time.time_ns() // 1_000_000
        while not writer.put(now, b'{"seq":%d}' % seq):
            time.sleep(0.001)
        seq += 1
        time.sleep(0.0005)


if __name__ == "__main__":
    main()
