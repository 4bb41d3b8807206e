"""Refresh the README's screenshots (docs/screenshots/*.png) from a real demo in a real browser.

Runs ``petrosa_pipelines_tests/test_ui/test_demo_ui.py`` with ``PETROSA_UPDATE_SCREENSHOTS=1``:
the test runs ``petrosa demo --no-ui`` into a temporary workdir, serves it with
``dagster-webserver``, asserts what the UI shows and saves the health grid and two analytics
charts as the user sees them (element screenshots in Chromium). Pass ``--workdir DIR`` to reuse
a finished ``petrosa demo --no-ui --days 2 --symbols BTCUSDT --workdir DIR``.

    python3 scripts/screenshots.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST = "petrosa_pipelines_tests/test_ui/test_demo_ui.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workdir", help="reuse this finished demo workdir")
    args = parser.parse_args(argv)
    env = {**os.environ, "PETROSA_UPDATE_SCREENSHOTS": "1"}
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        if not (workdir / "start_date").exists():
            parser.error(f"--workdir {workdir}: no demo ran there (no start_date)")
        env["PETROSA_DEMO_WORKDIR"] = str(workdir)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST]
    done = subprocess.run(cmd, env=env, cwd=REPO)
    if done.returncode == 0:
        for png in sorted((REPO / "docs" / "screenshots").glob("*.png")):
            print(f"{png.relative_to(REPO)}  {png.stat().st_size / 1000:.0f} kB")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
