#!/usr/bin/env python3
"""Set up and run the project with nothing but Python 3.11+: ``python3 tasks.py demo|test|...``.

Creates ``.venv`` and installs the project (with dev extras) when missing or when
pyproject.toml changed, then runs the task inside it. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".installed"


def _pyproject_hash() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_env() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script runs before the venv exists
        sys.exit(f"petrosa_pipelines needs Python 3.11+, this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _pyproject_hash():
        return
    print("installing petrosa-pipelines and its dependencies (one time)", flush=True)
    subprocess.run(
        [str(BIN / "python"), "-m", "pip", "install", "-q", "-e", f"{ROOT}[dev]"],
        check=True,
        cwd=ROOT,
    )
    STAMP.write_text(_pyproject_hash())


def run(*cmd: str) -> int:
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(ROOT / ".dagster_home"))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(list(cmd), cwd=ROOT, env=env, check=False).returncode


def test_args(args: list[str]) -> list[str]:
    """``--fast``: the pure, in-process lane (see the root conftest), spread over every core."""
    if "--fast" in args and not any(a == "-n" or a.startswith("-n") for a in args):
        return [*args, "-n", "auto"]
    return list(args)


TASKS = {
    "setup": lambda args: 0,
    "demo": lambda args: run(str(BIN / "petrosa"), "demo", *args),
    "test": lambda args: run(str(BIN / "pytest"), *test_args(args)),
    "lint": lambda args: (
        run(str(BIN / "ruff"), "check", ".", *args)
        or run(str(BIN / "ruff"), "format", "--check", ".")
    ),
    "bench": lambda args: run(str(BIN / "python"), "benchmarks/run_all.py", *args),
    "stack": lambda args: run(str(BIN / "petrosa"), "stack", *args),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TASKS:
        print(f"usage: python3 tasks.py {{{'|'.join(TASKS)}}} [args...]", file=sys.stderr)
        return 2
    ensure_env()
    return TASKS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
