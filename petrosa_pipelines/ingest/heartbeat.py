"""The heartbeat file of a stream group: what the supervisor sensor reads to judge a run.

It lives under the landing root (``{root}/{exchange}/_heartbeat/{group}.json``), is replaced
atomically, and carries the run id, the time it was written, the liveness judgement and the
per-stream statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from petrosa_pipelines.landing import layout
from petrosa_pipelines.landing.segments import atomic_write


def heartbeat_file(root: str | Path, exchange: str, group: str) -> Path:
    return layout.heartbeat_path(Path(root), exchange, group)


def write_heartbeat(root: str | Path, exchange: str, group: str, snapshot: dict[str, Any]) -> None:
    atomic_write(heartbeat_file(root, exchange, group), orjson.dumps(snapshot))


def read_heartbeat(root: str | Path, exchange: str, group: str) -> dict[str, Any] | None:
    """The last heartbeat of ``group``, or None when there is none (or it is unreadable)."""
    path = heartbeat_file(root, exchange, group)
    try:
        return orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
