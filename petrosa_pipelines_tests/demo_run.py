"""``petrosa demo --no-ui`` as a fresh clone runs it, shared by the demo test and the demo's UI.

One demo streams a whole day of two venues through the ingest (Binance USD-M and Bybit linear,
one stream group each) and builds 86,400 book snapshots (rows) per instrument: about five minutes of
two cores. ``test_project/test_demo.py`` (what the demo prints and writes)
and ``test_ui/test_demo_ui.py`` (what the UI then shows) look at the same finished run, the
session fixture ``finished_demo`` in the root conftest, instead of paying for two.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYMBOL = "BTCUSDT"
#: the demo takes a bare symbol on every venue the local exchange speaks
INSTRUMENTS = ("binance-usdm:BTCUSDT", "bybit-linear:BTCUSDT")
#: the streamed day (depth, liquidity, heatmap) and the day before it, from before the ingest
#: ran (no book history can exist there: its depth is "not applicable", not failed)
DAYS = 2
#: seconds of live ingest after the days are built (the "today so far" lines)
INGEST_SECONDS = 4
#: streaming a whole day of both venues, building their books and Bybit's depth days from its
#: book archive took about 10 minutes on a loaded 2-core machine, and over 20 at load 20
DEMO_TIMEOUT_S = 2400
#: pytest-timeout for a test that may be the first to need the session's demo (the suite's
#: default of 600 s is below what the demo takes on a machine shared with other suites)
DEMO_TEST_TIMEOUT_S = DEMO_TIMEOUT_S + 120


@dataclass(frozen=True)
class DemoRun:
    """A finished demo: its workdir and what it printed."""

    workdir: Path
    returncode: int
    stdout: str
    stderr: str
    #: the UTC date when the demo was started: its days are the ones closed on that date (or on
    #: the next, when the start was a moment before midnight)
    started_on: dt.date

    def explain(self) -> str:
        return self.stdout[-2000:] + self.stderr[-3000:]


def run_demo_cli(
    workdir: Path, ingest_seconds: float, *args: str, days: int = 1, **settings: str
) -> subprocess.CompletedProcess[str]:
    """``petrosa demo --no-ui`` for ``days`` days of BTCUSDT on both venues in a clean
    environment (no ``PETROSA_*`` or ``DAGSTER_HOME`` from the developer's shell) plus
    ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PETROSA_", "DAGSTER_HOME"))}
    env.update(settings)
    return subprocess.run(
        [str(Path(sys.executable).parent / "petrosa"), "demo", "--no-ui", "--days", str(days),
         "--symbols", SYMBOL, "--workdir", str(workdir),
         "--ingest-seconds", str(ingest_seconds), *args],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S,
    )  # fmt: skip


def run_shared_demo(workdir: Path) -> DemoRun:
    """The demo every demo test looks at: ``DAYS`` days, a live tail of ``INGEST_SECONDS``."""
    started_on = dt.datetime.now(tz=dt.UTC).date()
    done = run_demo_cli(workdir, INGEST_SECONDS, days=DAYS)
    return DemoRun(workdir, done.returncode, done.stdout, done.stderr, started_on)
