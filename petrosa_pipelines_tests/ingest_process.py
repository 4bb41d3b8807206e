"""An ``ingest`` job run as a real ``dagster job execute`` process against the local exchange.

Shared by the tests that need what only a real process shows: its console, its signals, its
observations in a Dagster instance on disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class IngestProcess:
    proc: subprocess.Popen
    home: Path
    landing: Path
    log: Path

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def wait_for(self, cond: Callable[[], bool], deadline_s: float, what: str) -> None:
        """Poll ``cond`` until true; fail with the process's log after ``deadline_s``."""
        deadline = time.monotonic() + deadline_s
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.tail()}"
            time.sleep(0.3)


@contextmanager
def ingest_process(tmp_path: Path, exchange, op_config: str) -> Iterator[IngestProcess]:
    """Start the ingest job with ``op_config`` (YAML lines under ``config:``); killed on exit."""
    home, landing = tmp_path / "home", tmp_path / "landing"
    home.mkdir()
    # Create the instance's SQLite storage first, as a deployment's webserver or daemon has: a
    # test that opens the instance while the job's process creates the same databases races it
    # to ``CREATE TABLE alembic_version`` (seen in CI: "table alembic_version already exists").
    with dg.DagsterInstance.from_config(str(home)):
        pass
    config = tmp_path / "ingest.yaml"
    indented = "".join(f"      {line}\n" for line in op_config.strip().splitlines())
    config.write_text("ops:\n  ingest_stream_group:\n    config:\n" + indented)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PETROSA_LANDING_PATH": str(landing),
        "PETROSA_REST_BASE_URL": exchange.rest_base_url,
        "PETROSA_WS_BASE_URL": exchange.ws_base_url,
        "PETROSA_VISION_BASE_URL": exchange.vision_base_url,
    }
    log = tmp_path / "ingest.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "dagster"), "job", "execute", "-m", "petrosa_pipelines.definitions"]
            + ["-j", "ingest", "-c", str(config)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield IngestProcess(proc, home, landing, log)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=60)
