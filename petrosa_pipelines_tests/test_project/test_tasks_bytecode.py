"""``python3 tasks.py test`` gives the suite's processes one bytecode cache outside the checkout."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _tasks():
    spec = importlib.util.spec_from_file_location("petrosa_tasks", REPO / "tasks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_suite_caches_bytecode_under_the_venv_even_when_the_machine_says_not_to():
    tasks = _tasks()
    env = tasks.bytecode_env({"PYTHONDONTWRITEBYTECODE": "1"})
    assert env["PYTHONDONTWRITEBYTECODE"] == ""  # empty: not set, for Python
    assert Path(env["PYTHONPYCACHEPREFIX"]) == REPO / ".venv" / "pycache"


def test_a_cache_prefix_the_user_chose_is_kept():
    assert _tasks().bytecode_env({"PYTHONPYCACHEPREFIX": "/elsewhere"}) == {}


def test_python_writes_into_the_prefix_and_not_beside_the_source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "probe_module.py").write_text("X = 1\n")
    prefix = tmp_path / "cache"
    env = {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": str(prefix), "PATH": ""}
    subprocess.run(
        [sys.executable, "-c", "import probe_module"], cwd=src, env=env, check=True, timeout=60
    )
    assert list(prefix.rglob("probe_module*.pyc"))
    assert not (src / "__pycache__").exists()
