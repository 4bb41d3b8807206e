"""Scratch directories on tmpfs (``/dev/shm``) for tests whose Dagster instance writes a lot.

A SQLite instance commits each event with an fsync; on a loaded 2-core disk that is most of a
Dagster test's time (``store_event`` and ``_connect``), while the test asserts nothing about
the disk. On tmpfs the same SQLite files, the same storage classes and the same queries run
without the fsync. Where ``/dev/shm`` is missing (macOS) or small, the directory is an ordinary
temp one.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SHM = Path("/dev/shm")
#: below this much free tmpfs (a container's default /dev/shm is 64 MiB) use the disk instead
MIN_FREE_BYTES = 512 * 1024 * 1024


def scratch_root() -> Path | None:
    """``/dev/shm`` when it is a writable directory with room, else None (the temp dir)."""
    try:
        if shutil.disk_usage(SHM).free < MIN_FREE_BYTES:
            return None
        probe = tempfile.mkdtemp(prefix="petrosa-probe-", dir=SHM)
    except OSError:
        return None
    Path(probe).rmdir()
    return SHM


@contextmanager
def tmpfs_dir(prefix: str = "petrosa-test-") -> Iterator[Path]:
    """A fresh directory on tmpfs when there is one, removed with everything in it after."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch_root()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
