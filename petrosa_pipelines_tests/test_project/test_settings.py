"""Settings: env overrides, clear errors naming the setting, instance YAML switching."""

import pytest
import yaml

from petrosa_pipelines.settings import LIVE_BINANCE_REST, SettingError, from_env
from petrosa_pipelines.tooling.instance import instance_yaml


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
        ("PETROSA_SYMBOLS", "BTC/USDT", "not a binance-usdm symbol"),
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


# -- issue 11 item 18: every bad value is a clear error naming the setting, secrets masked ----


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("PETROSA_SYMBOLS", ",,,", "every trading perpetual"),
        ("PETROSA_SYMBOLS", " ", "every trading perpetual"),
        ("PETROSA_SYMBOLS", "../../etc", "not a binance-usdm symbol"),
        ("PETROSA_REST_MAX_RETRIES", "-1", ">= 0"),
        ("PETROSA_WEIGHT_BUDGET_FRACTION", "nan", "finite"),
        ("PETROSA_REST_TIMEOUT_SECONDS", "inf", "finite"),
        ("PETROSA_REST_DEADLINE_SECONDS", "0", "> 0"),
        ("PETROSA_REST_MAX_WAIT_SECONDS", "-5", "> 0"),
        ("PETROSA_REST_BASE_URL", "http://", "with a host"),
        ("PETROSA_VISION_BASE_URL", "https://x:99999", "Port"),
    ],
)
def test_more_bad_values_name_the_setting(var, value, message):
    with pytest.raises(SettingError, match=message) as info:
        from_env({var: value})
    assert var in str(info.value)


def test_every_perpetual_is_said_explicitly():
    assert from_env({"PETROSA_SYMBOLS": "*"}).symbols == ()


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("PETROSA_ANOMALY_Z", "nan", "finite"),
        ("PETROSA_HEALTH_MIN_SCORE", "nan", "finite"),
        ("PETROSA_HEALTH_MIN_SCORE", "150", "between 0 and 100"),
        ("PETROSA_ANOMALY_MIN_RETURN", "-0.1", ">= 0"),
        ("PETROSA_DEPTH_MIN_COVERAGE", "inf", "finite"),
        ("PETROSA_AUDIT_RECENT_DAYS", "0", ">= 1"),
        ("PETROSA_HEALTH_WEIGHTS", "completeness=nan", "finite"),
    ],
)
def test_audit_thresholds_refuse_nan_and_out_of_range(var, value, message):
    """A NaN threshold compares False with everything: it silently disabled its check."""
    from petrosa_pipelines.checks.settings import audit_settings

    with pytest.raises(SettingError, match=message) as info:
        audit_settings({var: value})
    assert var in str(info.value)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("PETROSA_BACKFILL_COOLDOWN_S", "-900"),
        ("PETROSA_BACKFILL_LOOKBACK_DAYS", "-3"),
        ("PETROSA_BACKFILL_LOOKBACK_DAYS", "0"),
        ("PETROSA_BACKFILL_MIN_GAP_S", "-1"),
        ("PETROSA_BACKFILL_MAX_ATTEMPTS", "0"),
    ],
)
def test_backfill_limits_refuse_negative_values(var, value):
    from petrosa_pipelines.checks.settings import backfill_settings

    with pytest.raises(SettingError) as info:
        backfill_settings({var: value})
    assert var in str(info.value)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("PETROSA_ALERT_FOLD_WINDOW_S", "-1"),
        ("PETROSA_INGEST_DOWN_AFTER_S", "0"),
        ("PETROSA_ALERT_SMTP_PORT", "70000"),
    ],
)
def test_alert_limits_refuse_out_of_range(var, value):
    from petrosa_pipelines.checks.settings import alert_settings

    with pytest.raises(SettingError) as info:
        alert_settings({var: value})
    assert var in str(info.value)


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ('[{"name": "majors", "symbols": "BTCUSDT"}]', "[0].symbols"),
        ('[{"name": "majors", "symbols": []}]', "[0].symbols"),
        ('[{"name": "majors", "symbols": ["BTC/USDT"]}]', "[0].symbols"),
        ('[{"name": "../x", "symbols": ["BTCUSDT"]}]', "[0].name"),
        ('[{"name": "a", "symbols": ["BTCUSDT"], "datasets": "trades"}]', "[0].datasets"),
        ('[{"name": "a", "symbols": ["BTCUSDT"], "datasets": ["klines"]}]', "[0].datasets"),
        ('[{"name": "a", "symbols": ["BTCUSDT"], "enabled": "no"}]', "[0].enabled"),
        ('[{"name": "a", "symbols": ["BTCUSDT"], "symbol": "x"}]', "[0]"),
        ('[{"name": "a", "symbols": ["X1"]}, {"name": "a", "symbols": ["X2"]}]', ""),
        ('{"name": "a"}', ""),
        ("[{'name': 'a'}]", ""),
        ("[]", ""),
    ],
)
def test_ingest_groups_are_checked_with_the_group_and_key_named(monkeypatch, raw, where):
    """``"symbols": "BTCUSDT"`` used to stream B, T, C, U, S, D, T; bad JSON was a raw
    JSONDecodeError."""
    from sensors.ingest_supervisor import groups_from_env

    monkeypatch.setenv("PETROSA_INGEST_GROUPS", raw)
    with pytest.raises(SettingError) as info:
        groups_from_env()
    assert f"PETROSA_INGEST_GROUPS{where}" in str(info.value)


def test_valid_ingest_groups_are_normalised(monkeypatch):
    from sensors.ingest_supervisor import groups_from_env

    monkeypatch.setenv(
        "PETROSA_INGEST_GROUPS",
        '[{"name": "majors", "symbols": ["btcusdt", "ETHUSDT"], "datasets": ["trades"]}]',
    )
    [group] = groups_from_env()
    assert group.symbols == ("BTCUSDT", "ETHUSDT") and group.datasets == ("trades",)


def test_ingest_config_refuses_a_string_of_symbols_and_bad_durations():
    from petrosa_pipelines.ingest.config import IngestConfig

    with pytest.raises(ValueError, match="list of symbols"):
        IngestConfig(group="g", symbols="BTCUSDT")
    with pytest.raises(ValueError, match="stale_after_s"):
        IngestConfig(group="g", symbols=("BTCUSDT",), stale_after_s=float("nan"))
    with pytest.raises(ValueError, match="backoff_initial_s"):
        IngestConfig(group="g", symbols=("BTCUSDT",), backoff_initial_s=-1.0)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("garbage-s3cretpw", "postgresql"),
        ("mysql://u:s3cretpw@h/d", "postgresql"),
        ("postgresql://u:s3cretpw@host:notaport/db", "postgresql"),
        ("postgresql://u:s3cr@tpw@host/db", "postgresql"),
        ("postgresql://u:s3cretpw@/db", "postgresql"),
        ("mongodb://u:s3cretpw@h:99999", "mongodb"),
        ("mongodb://u:s3cr@tpw@h", "mongodb"),
        ("http://u:s3cretpw@h", "mongodb"),
    ],
)
def test_database_urls_are_checked_before_the_driver_and_never_echo_the_password(url, kind):
    """SQLAlchemy and pymongo raised untyped errors (ArgumentError, ValueError, InvalidURI)."""
    from petrosa_pipelines.settings import check_database_url

    with pytest.raises(SettingError) as info:
        check_database_url("PETROSA_WAREHOUSE_URL", url, kind)
    assert "PETROSA_WAREHOUSE_URL" in str(info.value)
    assert "s3cr" not in str(info.value)


def test_resources_and_api_check_their_urls(monkeypatch):
    from petrosa_pipelines.api import DataSources
    from resources.mongo_sink import MongoSinkResource
    from resources.warehouse import WarehouseResource

    bad_pg = "postgresql://user:s3cretpw@db:port/warehouse"
    with pytest.raises(SettingError, match="PETROSA_WAREHOUSE_URL") as info:
        WarehouseResource(url=bad_pg).warehouse()
    assert "s3cretpw" not in str(info.value) and "user:***@db" in str(info.value)
    with pytest.raises(SettingError, match="PETROSA_MONGODB_URL") as info:
        MongoSinkResource(url="mongodb://user:s3cr@tpw@mongo").sink()
    assert "s3cr" not in str(info.value)
    with pytest.raises(SettingError, match="PETROSA_WAREHOUSE_URL") as info:
        DataSources.from_settings({"PETROSA_WAREHOUSE_URL": bad_pg})
    assert "s3cretpw" not in str(info.value)


def test_mask_url_and_redact():
    from petrosa_pipelines.settings import mask_url, redact

    assert mask_url("postgresql://u:pw@h:5432/db?password=x&sslmode=require") == (
        "postgresql://u:***@h:5432/db?password=***&sslmode=require"
    )
    token = "hooks.slack.com/services/T0AB12CD/B0EF34GH/abcDEF123ghiJKL456mnoP"
    assert mask_url("https://" + token, hide_path=True) == "https://hooks.slack.com/***"
    leaked = f"unknown url type: '{token}'; path /services/T0AB12CD/B0EF34GH/abcDEF123ghiJKL456mnoP"
    clean = redact(leaked, [token])
    assert "abcDEF123" not in clean and "B0EF34GH" not in clean and "hooks.slack.com" in clean
