"""Settings: env overrides, clear errors naming the setting, instance YAML switching."""

import pytest
import yaml

from petrosa_pipelines.instance import instance_yaml
from petrosa_pipelines.settings import LIVE_BINANCE_REST, SettingError, from_env


def test_defaults_are_live_binance():
    s = from_env({})
    assert s.endpoints.rest_base_url == LIVE_BINANCE_REST == "https://fapi.binance.com"
    assert s.endpoints.ws_base_url == "wss://fstream.binance.com"
    assert s.endpoints.vision_base_url == "https://data.binance.vision"


def test_env_overrides_every_url():
    s = from_env(
        {
            "PETROSA_REST_BASE_URL": "http://127.0.0.1:1",
            "PETROSA_WS_BASE_URL": "ws://127.0.0.1:1",
            "PETROSA_VISION_BASE_URL": "http://127.0.0.1:1/vision",
            "PETROSA_SYMBOLS": "btcusdt, ethusdt",
        }
    )
    assert s.endpoints.rest_base_url == "http://127.0.0.1:1"
    assert s.endpoints.ws_base_url == "ws://127.0.0.1:1"
    assert s.symbols == ("BTCUSDT", "ETHUSDT")


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("PETROSA_WS_BASE_URL", "http://x", "ws:// or wss://"),
        ("PETROSA_REST_BASE_URL", "ftp://x", "http:// or https://"),
        ("PETROSA_WEIGHT_BUDGET_FRACTION", "1.5", "0 < x <= 1"),
        ("PETROSA_WEIGHT_BUDGET_FRACTION", "lots", "a number"),
        ("PETROSA_EXCHANGE", "kraken", "one of"),
        ("PETROSA_START_DATE", "yesterday", "YYYY-MM-DD"),
        ("PETROSA_SYMBOLS", "BTC/USDT", "alphanumeric"),
    ],
)
def test_bad_values_name_the_setting_and_what_is_allowed(var, value, message):
    with pytest.raises(SettingError, match=message) as info:
        from_env({var: value})
    assert var in str(info.value)


def test_instance_yaml_is_sqlite_by_default_and_postgres_by_env():
    default = yaml.safe_load(instance_yaml({}))
    assert "storage" not in default
    assert default["run_coordinator"]["class"] == "QueuedRunCoordinator"
    pg = yaml.safe_load(
        instance_yaml({"PETROSA_DAGSTER_POSTGRES_URL": "postgresql+psycopg2://u@h:5432/d"})
    )
    assert pg["storage"]["postgres"]["postgres_url"] == {"env": "PETROSA_DAGSTER_POSTGRES_URL"}


def test_plain_postgresql_url_is_refused_with_the_reason():
    with pytest.raises(SettingError, match="psycopg2"):
        instance_yaml({"PETROSA_DAGSTER_POSTGRES_URL": "postgresql://u@h/d"})
