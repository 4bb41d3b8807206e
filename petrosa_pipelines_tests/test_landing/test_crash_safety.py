"""kill -9 of a writer at random moments: no corrupt closed segment, nothing durable lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from petrosa_pipelines.landing import layout
from petrosa_pipelines.landing.segments import valid_prefix_length
from petrosa_pipelines.landing.store import LandingStore
from petrosa_pipelines.landing.writer import recover_group

REPO = Path(__file__).resolve().parents[2]


def _closed_segments(root: Path) -> list[Path]:
    return sorted(root.rglob("seg-*.jsonl"))


def _run_and_kill(root: Path, round_no: int, rng: random.Random) -> int:
    """Start a writer process, let it write a while, SIGKILL it; return its last durable count."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "petrosa_pipelines_tests.test_landing.crash_child", str(root),
         str(round_no)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"started", proc.stderr.read()
    # let it commit something first (a loaded CI box may start slowly), then kill at random
    # (the count read here is durable too: keep it, as a busy child may print nothing more
    # before the kill)
    while (last := int(proc.stdout.readline() or b"-1")) < 1_000:
        assert proc.poll() is None, proc.stderr.read()
    time.sleep(rng.uniform(0.0, 0.5))
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=10)
    counts = [int(x) for x in out.split()]
    assert proc.returncode == -signal.SIGKILL
    return counts[-1] if counts else last


@pytest.mark.slow
def test_kill_9_leaves_no_corrupt_segment_and_loses_nothing_durable(tmp_path):
    rng = random.Random(42)
    durable_by_round = {}
    interrupted = 0
    for round_no in range(5):
        durable_by_round[round_no] = _run_and_kill(tmp_path, round_no, rng)
        interrupted += bool(list(tmp_path.rglob(".seg-*.tmp")))
        # every *closed* segment is complete right after the kill, before any recovery
        for seg in _closed_segments(tmp_path):
            data = seg.read_bytes()
            assert valid_prefix_length(data) == len(data), seg
    recover_group(tmp_path, "binance", "crash")
    assert not list(tmp_path.rglob(".seg-*.tmp"))
    assert interrupted, "the kills should have interrupted at least one open segment"

    seqs: dict[int, list[int]] = {r: [] for r in durable_by_round}
    store = LandingStore(tmp_path)
    for seg in _closed_segments(tmp_path):
        data = seg.read_bytes()
        assert valid_prefix_length(data) == len(data), seg
    for _, payload in store.iter_lines("binance", 0, 4_102_444_800_000, slack_ms=0):
        msg = orjson.loads(payload)
        seqs[msg["round"]].append(msg["seq"])
    for round_no, durable in durable_by_round.items():
        got = seqs[round_no]
        assert durable > 0
        # a contiguous prefix in write order: no hole, no duplicate, nothing reordered ...
        assert got == list(range(len(got))), round_no
        # ... holding at least everything the writer had reported durable before the kill
        assert len(got) >= durable, (round_no, len(got), durable)


def test_layout_ignores_open_temp_files(tmp_path):
    d = layout.data_hour_dir(tmp_path, "binance", "g", 0)
    d.mkdir(parents=True)
    (d / ".seg-0-abc-1.jsonl.tmp").write_bytes(b"1 {}\n")
    (d / "seg-0-abc-2.jsonl").write_bytes(b"1 {}\n")
    assert [n.seq for n, _ in layout.closed_segments_in(d)] == [2]
