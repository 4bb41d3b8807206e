"""Crash-safe append-only segment files: the only code that creates, closes or repairs them.

A segment is written as a hidden temp file and becomes visible by an atomic rename once it is
complete, so a reader never sees a partial segment. ``kill -9`` at any moment leaves at worst a
temp file whose tail line is cut; :func:`recover_temp_files` keeps its complete lines, drops the
partial one and publishes it. Durability is by ``fsync`` of the file (and of the directory after
creating or renaming an entry), because a rename alone can be reordered before the data on ext4.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from petrosa_pipelines.landing.layout import SegmentName

_LINE_RE = re.compile(rb"\d+ [^\n]*\n")


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durable(path: Path) -> None:
    """``mkdir -p`` that fsyncs each parent whose entries changed."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Write a small file so that it either exists complete or not at all."""
    make_dirs_durable(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class OpenSegment:
    """One segment being written: a hidden temp file until :meth:`close` publishes it."""

    def __init__(self, directory: Path, name: SegmentName, *, fsync: bool = True):
        self.directory = directory
        self.name = name
        self.fsync = fsync
        make_dirs_durable(directory)
        self.temp_path = directory / name.temp_name
        self.final_path = directory / name.file_name
        self._file = open(self.temp_path, "xb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        if fsync:
            fsync_dir(directory)
        self.bytes = 0
        self.lines = 0

    def write(self, line: bytes) -> None:
        self._file.write(line)
        self.bytes += len(line)
        self.lines += 1

    def sync(self) -> None:
        """Everything written so far survives a crash (in the temp file, recovered later)."""
        self._file.flush()
        if self.fsync:
            os.fdatasync(self._file.fileno())

    def close(self) -> Path:
        """Flush, fsync, publish by atomic rename, fsync the directory."""
        self.sync()
        self._file.close()
        os.rename(self.temp_path, self.final_path)
        if self.fsync:
            fsync_dir(self.directory)
        return self.final_path

    def abandon(self) -> None:
        """Close the file without publishing (tests simulate a crash with this)."""
        self._file.close()


def valid_prefix_length(data: bytes) -> int:
    """Length of the leading run of complete, well-formed ``<ms> <payload>\\n`` lines."""
    pos = 0
    n = len(data)
    match = _LINE_RE.match
    while pos < n:
        m = match(data, pos)
        if m is None:
            break
        pos = m.end()
    return pos


def recover_temp_file(temp_path: Path) -> Path | None:
    """Publish the complete lines of a leftover temp segment; drop a cut last line.

    Returns the published path, or None when nothing complete was in it (the file is removed).
    """
    name = SegmentName.parse_temp(temp_path.name)
    if name is None:
        raise ValueError(f"{temp_path} is not a segment temp file")
    data = temp_path.read_bytes()
    keep = valid_prefix_length(data)
    if keep == 0:
        temp_path.unlink()
        fsync_dir(temp_path.parent)
        return None
    with open(temp_path, "r+b") as f:
        if keep < len(data):
            f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    final = temp_path.with_name(name.file_name)
    os.rename(temp_path, final)
    fsync_dir(temp_path.parent)
    return final


def recover_temp_files(base: Path) -> list[Path]:
    """Recover every leftover temp segment under ``base`` (call only while holding its lock)."""
    if not base.is_dir():
        return []
    out = []
    for temp in sorted(base.rglob(".seg-*.tmp")):
        published = recover_temp_file(temp)
        if published is not None:
            out.append(published)
    return out


class GroupLockedError(RuntimeError):
    """Another live process writes this stream group already."""


class GroupLock:
    """An exclusive ``flock`` on a group's lock file, released by the kernel if we die.

    One writer per group is what makes recovering leftover temp files safe: a temp file found
    while we hold the lock belongs to a writer that is gone.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        make_dirs_durable(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise GroupLockedError(f"{self.path} is held by another writer") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None
