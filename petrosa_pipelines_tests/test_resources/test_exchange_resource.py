"""The exchange resource: explicit fields over PETROSA_* settings, shared weight budget."""

import pytest

from petrosa_pipelines.settings import SettingError
from resources import ExchangeResource


def test_fields_override_environment(monkeypatch):
    monkeypatch.setenv("PETROSA_REST_BASE_URL", "http://from-env:1")
    monkeypatch.setenv("PETROSA_VISION_BASE_URL", "http://from-env:1/vision")
    res = ExchangeResource(rest_base_url="http://explicit:2")
    settings = res.settings()
    assert settings.endpoints.rest_base_url == "http://explicit:2"
    assert settings.endpoints.vision_base_url == "http://from-env:1/vision"
    assert res.rest().transport is not None


def test_bad_field_names_the_setting():
    with pytest.raises(SettingError, match="PETROSA_WS_BASE_URL"):
        ExchangeResource(ws_base_url="http://not-a-websocket").settings()


def test_runs_on_one_machine_share_one_weight_budget(tmp_path):
    a = ExchangeResource(rest_base_url="http://127.0.0.1:9", budget_dir=str(tmp_path)).rest()
    b = ExchangeResource(rest_base_url="http://127.0.0.1:9", budget_dir=str(tmp_path)).rest()
    a.budget.reserve(100)
    assert b.budget.used >= 100
    assert list(tmp_path.glob("*.weight.json"))
