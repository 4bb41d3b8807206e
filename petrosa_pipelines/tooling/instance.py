"""Prepare ``$DAGSTER_HOME``: the repo's dagster.yaml, plus PostgreSQL storage when asked for."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL_VAR = "PETROSA_DAGSTER_POSTGRES_URL"

_POSTGRES_STORAGE = f"""
# added by `petrosa instance` because {POSTGRES_URL_VAR} is set
storage:
  postgres:
    postgres_url:
      env: {POSTGRES_URL_VAR}
"""


def instance_yaml(environ: Mapping[str, str] | None = None) -> str:
    """The instance config: embedded SQLite by default, PostgreSQL when the URL variable is set."""
    env = os.environ if environ is None else environ
    text = (REPO_ROOT / "dagster.yaml").read_text()
    url = env.get(POSTGRES_URL_VAR, "").strip()
    if url:
        if not url.startswith("postgresql+psycopg2://"):
            from petrosa_pipelines.settings import SettingError

            raise SettingError(
                POSTGRES_URL_VAR,
                "<hidden>",
                "a postgresql+psycopg2://user@host:port/db URL (SQLAlchemy 2 maps plain "
                "postgresql:// to psycopg 3, which breaks dagster-postgres)",
            )
        text += _POSTGRES_STORAGE
    return text


def prepare_dagster_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Create ``home`` (default: $DAGSTER_HOME or .dagster_home) with its dagster.yaml."""
    path = Path(home or os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".dagster_home").resolve()
    path.mkdir(parents=True, exist_ok=True)
    target = path / "dagster.yaml"
    text = instance_yaml()
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return path
