"""A landing writer that writes numbered lines until killed (for the kill -9 test).

Usage: python -m petrosa_pipelines_tests.test_landing.crash_child ROOT ROUND
Prints the cumulative count of durable lines after each group commit.
"""

from __future__ import annotations

import sys
import time

from petrosa_pipelines.landing.writer import LandingWriter, WriterConfig


def main() -> None:
    root, round_no = sys.argv[1], int(sys.argv[2])
    config = WriterConfig(segment_max_age_s=0.3, segment_max_bytes=400_000, batch_max_items=500)
    writer = LandingWriter(root, "binance", "crash", config=config)
    durable = 0

    def report(n: int) -> None:
        nonlocal durable
        durable += n
        sys.stdout.write(f"{durable}\n")
        sys.stdout.flush()

    writer.add_durable_listener(report)
    writer.start()
    sys.stdout.write("started\n")
    sys.stdout.flush()
    seq = 0
    pad = "x" * 150
    while True:
        for _ in range(100):
            now = time.time_ns() // 1_000_000
            payload = b'{"round":%d,"seq":%d,"pad":"%s"}' % (round_no, seq, pad.encode())
            while not writer.put(now, payload):
                time.sleep(0.001)
            seq += 1
        time.sleep(0.001)


if __name__ == "__main__":
    main()
