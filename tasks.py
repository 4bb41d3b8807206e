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


def run(*cmd: str, bytecode: bool = False) -> int:
    env = dict(os.environ)
    env.setdefault("DAGSTER_HOME", str(ROOT / ".dagster_home"))
    if bytecode:
        env.update(bytecode_env(env))
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(list(cmd), cwd=ROOT, env=env, check=False).returncode


#: where the test suite's processes keep the bytecode they compile, out of the source tree
PYCACHE = VENV / "pycache"


def bytecode_env(env: dict[str, str]) -> dict[str, str]:
    """Bytecode caching for the suite, kept in ``PYCACHE`` even when ``PYTHONDONTWRITEBYTECODE``
    is set (some machines set it to keep ``__pycache__`` out of checkouts).

    Without a cache every one of the suite's few hundred Python processes (xdist workers,
    Dagster runs, servers, CLIs) compiles the project's modules again, and every worker rewrites
    every test module's asserts again: measured here, collecting the suite took 13 s of CPU per
    worker without a cache and 5 s with one, and loading the code location 0.3 s more per
    process. ``PYTHONPYCACHEPREFIX`` (https://docs.python.org/3/using/cmdline.html) moves the
    caches out of the checkout, and pytest keeps its rewritten modules there too.
    """
    if env.get("PYTHONPYCACHEPREFIX"):
        return {}
    return {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(PYCACHE)}


#: the whole suite's xdist workers: at least 4, since its longest tests mostly wait on other
#: processes (the stack's daemon and runs, the demo's ingest, a browser) and two of them hold a
#: worker each for minutes (``XDIST_GROUPS`` in the root conftest)
MIN_FULL_SUITE_WORKERS = 4


def test_args(args: list[str]) -> list[str]:
    """The suite spread over xdist workers unless ``-n``/``-p no:xdist`` is given.

    ``--fast``: the pure, in-process lane (see the root conftest), one worker per core. The
    whole suite: ``--dist loadgroup``, so the tests sharing the stack or the demo run stay in
    one worker (which starts it once) while everything else spreads over the others.
    """
    chosen = any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in args)
    if chosen or "no:xdist" in args:
        return list(args)
    if "--fast" in args:
        return [*args, "-n", "auto"]
    workers = max(MIN_FULL_SUITE_WORKERS, os.cpu_count() or 1)
    # the slowest tests printed with every full run: where the suite's time goes, on record
    durations = [] if any(a.startswith("--durations") for a in args) else ["--durations=25"]
    return [*args, "-n", str(workers), "--dist", "loadgroup", *durations]


TASKS = {
    "setup": lambda args: 0,
    "demo": lambda args: run(str(BIN / "petrosa"), "demo", *args),
    "test": lambda args: run(str(BIN / "pytest"), *test_args(args), bytecode=True),
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
