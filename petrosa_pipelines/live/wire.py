"""The pipes between ``LiveOutputs`` (in the ingest's process) and its worker process.

One message on a pipe is a 4-byte little-endian length and a pickle of ``(kind, data)``: the
ingest sends ``init`` (settings, adapter: secrets travel here, never in argv or the
environment), ``items`` (a batch of offered frames and records) and ``close`` (the deadline);
the worker sends ``report`` (its counters) and ``final``. Both ends are our own code, so
pickle is safe here, and it is the cheapest encoding of a batch of frames and records.

Writes never wait: a ``PipeWriter`` writes what the pipe takes and keeps the rest of at most
one message, so a full pipe costs its caller a refused write (``EAGAIN``), not a block.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import select
import time
from typing import Any

#: the data pipe's capacity asked of the kernel (Linux caps it at ``fs.pipe-max-size``)
PIPE_BYTES = 1 << 20
_LEN = 4


def encode(kind: str, data: Any) -> bytes:
    body = pickle.dumps((kind, data), protocol=5)
    return len(body).to_bytes(_LEN, "little") + body


def pipe(size: int = PIPE_BYTES) -> tuple[int, int]:
    """(read fd, write fd), close-on-exec, grown to ``size`` where the kernel allows."""
    r, w = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # over the user's pipe quota: default
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
    return r, w


class Decoder:
    """Bytes read from a pipe in, whole messages out (a message may span reads)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, Any]]:
        buf = self._buf
        buf += data
        out, at, end = [], 0, len(buf)
        view = memoryview(buf)
        try:
            while end - at >= _LEN:
                n = int.from_bytes(view[at : at + _LEN], "little")
                if end - at - _LEN < n:
                    break
                out.append(pickle.loads(view[at + _LEN : at + _LEN + n]))  # noqa: S301 - ours
                at += _LEN + n
        finally:
            view.release()
        if at:
            del buf[:at]
        return out


class PipeWriter:
    """The writing end of a pipe, non-blocking. ``put`` a message, ``push`` what is left of it;
    ``items`` counts what the messages carried, ``sent`` what was written whole."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd: int | None = fd
        self._rest = memoryview(b"")
        self._rest_items = 0
        #: items of the messages written whole
        self.sent = 0
        #: the reader is gone (EPIPE) or the fd was closed
        self.broken = False

    @property
    def waiting_items(self) -> int:
        """Items of the message partly written (in neither the pipe nor the caller's queue)."""
        return self._rest_items if self._rest else 0

    def busy(self) -> bool:
        return bool(self._rest)

    def put(self, message: bytes, items: int = 0) -> bool:
        """Queue ``message`` (nothing may be left of the previous one) and push it."""
        self._rest, self._rest_items = memoryview(message), items
        return self.push()

    def push(self) -> bool:
        """Write what the pipe takes now; True when nothing is left."""
        while self._rest:
            if self.fd is None:
                self.broken = True
                return False
            try:
                n = os.write(self.fd, self._rest)
            except BlockingIOError:
                return False
            except OSError:  # EPIPE: the reader exited
                self.broken = True
                return False
            self._rest = self._rest[n:]
            if not self._rest:
                self.sent += self._rest_items
                self._rest_items = 0
        return True

    def push_until(self, deadline: float) -> bool:
        """Push, waiting for room until ``deadline`` (monotonic): for closing, never the ingest."""
        while not self.push():
            left = deadline - time.monotonic()
            if self.broken or left <= 0 or self.fd is None:
                return False
            select.select([], [self.fd], [], min(left, 0.5))
        return True

    def drop(self) -> int:
        """Forget what is left of the message; the items it carried."""
        n = self.waiting_items
        self._rest, self._rest_items = memoryview(b""), 0
        return n

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
