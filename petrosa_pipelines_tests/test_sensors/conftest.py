"""Real Dagster instances for sensor tests: SQLite and PostgreSQL (dagster-postgres)."""

from __future__ import annotations

import dagster as dg
import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def instance(request, tmp_path):
    (tmp_path / "home").mkdir()
    if request.param == "sqlite":
        with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as inst:
            yield inst
        return
    url = request.getfixturevalue("postgres_db")
    # psycopg2 explicitly: SQLAlchemy 2.x would map a bare postgresql:// to psycopg 3
    pg = url.replace("postgresql://", "postgresql+psycopg2://", 1)
    overrides = {"storage": {"postgres": {"postgres_url": pg}}}
    with dg.instance_for_test(temp_dir=str(tmp_path / "home"), overrides=overrides) as inst:
        yield inst
