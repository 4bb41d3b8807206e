"""One live-outputs worker process as the ingest's process sees it: started, reporting, ended.

The worker is started as ``python -m petrosa_pipelines.live.worker <data fd> <report fd>``: a
fresh interpreter, as multiprocessing's *spawn* gives, never a fork of the ingest's threaded,
asyncio process, and without multiprocessing re-running the ingest's ``__main__`` (a Dagster
run worker's) in the child. Its settings (the NATS and Redis URLs, secrets) go in the ``init``
message on the data pipe: never in its arguments, so never in a process listing, and the URL
variables are taken out of its environment. ``LiveOutputs`` (``publisher.py``) decides when to
start one, what to send it and what its end means.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from petrosa_pipelines.live.wire import Decoder, PipeWriter, encode, pipe

#: environment variables the worker does not get: it has its settings from the pipe
SECRET_VARS = ("PETROSA_NATS_URL", "PETROSA_REDIS_URL")
#: how long a reaped worker may take to exit once its pipes ended (s), before it is killed
REAP_S = 10.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def worker_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: the ingest's without the URL secrets, the package importable."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items()
           if k not in SECRET_VARS}  # fmt: skip
    paths = [_PACKAGE_ROOT, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


class WorkerProcess:
    """A started worker: ``writer`` (its data pipe), ``report`` (its last counters), ``final``
    (its last words at a clean close); ``poll_reports`` tells when it ended."""

    def __init__(self, init: dict[str, Any]) -> None:
        data_r, data_w = pipe()
        report_r, report_w = pipe(1 << 16)
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "petrosa_pipelines.live.worker",
                    str(data_r),
                    str(report_w),
                ],  # fmt: skip
                pass_fds=(data_r, report_w),
                stdin=subprocess.DEVNULL,
                env=worker_env(),
            )
        except BaseException:
            os.close(data_w)
            os.close(report_r)
            raise
        finally:  # the child has its own copies
            os.close(data_r)
            os.close(report_w)
        self.pid: int = self.proc.pid
        self.started = time.monotonic()
        self.writer = PipeWriter(data_w)
        self.writer.put(encode("init", init))  # an empty pipe takes it whole
        self._reports = report_r
        self._decoder = Decoder()
        self.report: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        self.reported_at: float | None = None
        self.returncode: int | None = None

    def poll_reports(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for reports and take them; False once the worker is gone (its
        report pipe ended)."""
        if self._reports < 0:
            return False
        ready, _, _ = select.select([self._reports], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self._reports, 1 << 16)
        except OSError:
            chunk = b""
        if not chunk:
            os.close(self._reports)
            self._reports = -1
            return False
        for kind, data in self._decoder.feed(chunk):
            if kind == "final":
                self.final = data
            self.report, self.reported_at = data, time.monotonic()
        return True

    def silent_for(self, now: float) -> float:
        """Seconds since its last report (since its start before the first)."""
        return now - (self.reported_at if self.reported_at is not None else self.started)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.send_signal(signal.SIGKILL)

    def reap(self) -> int:
        """Wait for the ended worker (killed if it lingers): no zombie is left behind."""
        try:
            self.returncode = self.proc.wait(REAP_S)
        except subprocess.TimeoutExpired:
            self.kill()
            self.returncode = self.proc.wait(REAP_S)
        self.writer.close()
        if self._reports >= 0:
            os.close(self._reports)
            self._reports = -1
        return self.returncode
