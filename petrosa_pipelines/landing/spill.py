"""A bounded hand-off queue between the websocket reader and the disk writer that spills to disk.

A slow disk must never grow memory without bound and must never drop a message silently. The
queue keeps up to ``max_memory_bytes`` in memory; beyond that, every new line goes to a spill
file (in arrival order: once spilling starts, nothing enters memory until the spill is drained,
so order is kept). Beyond ``max_spill_bytes`` :meth:`put` refuses and the producer must wait,
which back-pressures the socket instead of dropping.
"""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path

#: (store, received_at_ms, line) where line is ``b"<ms> <payload>\n"``
Item = tuple[int, int, bytes]


class SpillQueue:
    """Thread-safe FIFO of landing lines: memory first, then a spill file, then refusal."""

    def __init__(self, spill_path: Path, *, max_memory_bytes: int, max_spill_bytes: int):
        self.spill_path = spill_path
        self.max_memory_bytes = max_memory_bytes
        self.max_spill_bytes = max_spill_bytes
        self._mem: collections.deque[Item] = collections.deque()
        self._mem_bytes = 0
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._spill_w = None
        self._spill_r = None
        self._spill_written = 0
        self._spill_read = 0
        self.spilled_total = 0
        self.refused_total = 0
        self.peak_memory_bytes = 0

    # -- producer side -------------------------------------------------------------------------
    def put(self, store: int, recv_ms: int, line: bytes) -> bool:
        """Queue one line; False (nothing queued) when memory and spill are both full."""
        with self._lock:
            if self._spill_w is None and self._mem_bytes + len(line) <= self.max_memory_bytes:
                self._mem.append((store, recv_ms, line))
                self._mem_bytes += len(line)
                if self._mem_bytes > self.peak_memory_bytes:
                    self.peak_memory_bytes = self._mem_bytes
            else:
                if self._spill_written - self._spill_read + len(line) > self.max_spill_bytes:
                    self.refused_total += 1
                    return False
                self._spill(store, line)
            self._ready.notify()
            return True

    def _spill(self, store: int, line: bytes) -> None:
        if self._spill_w is None:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            self._spill_w = open(self.spill_path, "wb")  # noqa: SIM115 - closed when drained
            self._spill_r = open(self.spill_path, "rb")  # noqa: SIM115
            self._spill_written = self._spill_read = 0
        rec = b"%d " % store + line
        self._spill_w.write(rec)
        self._spill_written += len(rec)
        self.spilled_total += 1

    # -- consumer side -------------------------------------------------------------------------
    def get_batch(self, max_items: int = 20_000, timeout: float = 0.05) -> list[Item]:
        """Up to ``max_items`` oldest items; waits up to ``timeout`` seconds for the first."""
        with self._lock:
            if not self._mem and self._spill_w is None:
                self._ready.wait(timeout)
            if self._mem:
                n = min(max_items, len(self._mem))
                pop = self._mem.popleft
                out = [pop() for _ in range(n)]
                self._mem_bytes -= sum(len(i[2]) for i in out)
                return out
            if self._spill_w is not None:
                return self._read_spill(max_items)
            return []

    def _read_spill(self, max_items: int) -> list[Item]:
        assert self._spill_w is not None and self._spill_r is not None
        self._spill_w.flush()
        chunk = self._spill_r.read(min(4 << 20, self._spill_written - self._spill_read))
        cut = chunk.rfind(b"\n") + 1
        if cut < len(chunk):
            self._spill_r.seek(cut - len(chunk), os.SEEK_CUR)
            chunk = chunk[:cut]
        self._spill_read += len(chunk)
        out: list[Item] = []
        for raw in chunk.splitlines(keepends=True):
            sp1 = raw.index(b" ")
            sp2 = raw.index(b" ", sp1 + 1)
            out.append((int(raw[:sp1]), int(raw[sp1 + 1 : sp2]), raw[sp1 + 1 :]))
        if self._spill_read >= self._spill_written:
            # drained: back to memory mode
            self._spill_w.close()
            self._spill_r.close()
            self._spill_w = self._spill_r = None
            self.spill_path.unlink(missing_ok=True)
        return out

    def __len__(self) -> int:
        return len(self._mem)

    @property
    def memory_bytes(self) -> int:
        return self._mem_bytes

    @property
    def spill_bytes(self) -> int:
        return self._spill_written - self._spill_read if self._spill_w is not None else 0

    @property
    def empty(self) -> bool:
        with self._lock:
            return not self._mem and self._spill_w is None

    def wake(self) -> None:
        with self._lock:
            self._ready.notify_all()
