"""Old finished runs are purged; recent and running ones stay."""

import datetime as dt

import dagster as dg
import pytest

from petrosa_pipelines.maintenance import purge_old_runs_job, purge_runs_before, retention_days
from petrosa_pipelines.settings import SettingError


@dg.op
def noop() -> None:
    pass


@dg.job
def tiny() -> None:
    noop()


def test_purge_deletes_only_finished_runs_before_the_cutoff(dagster_instance):
    old = tiny.execute_in_process(instance=dagster_instance).run_id
    cutoff = dt.datetime.now(tz=dt.UTC) + dt.timedelta(seconds=1)
    import time

    time.sleep(1.2)
    recent = tiny.execute_in_process(instance=dagster_instance).run_id
    assert purge_runs_before(dagster_instance, cutoff) == [old]
    assert dagster_instance.get_run_by_id(old) is None
    assert dagster_instance.get_run_by_id(recent) is not None


def test_purge_job_runs_and_reports(dagster_instance, monkeypatch):
    monkeypatch.setenv("PETROSA_RUN_RETENTION_DAYS", "7")
    result = purge_old_runs_job.execute_in_process(instance=dagster_instance)
    assert result.success


def test_retention_setting_is_validated(monkeypatch):
    monkeypatch.setenv("PETROSA_RUN_RETENTION_DAYS", "0")
    with pytest.raises(SettingError, match="PETROSA_RUN_RETENTION_DAYS"):
        retention_days()
