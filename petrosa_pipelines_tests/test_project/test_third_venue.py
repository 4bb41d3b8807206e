"""A venue is one package plus one registry line: settings, the demo and the stack follow.

A fake third venue (a Bybit adapter and wire renamed ``okx-swap``) is put in the registries
(``exchanges.EXCHANGES``, ``local_exchange.venues.WIRES``) only; its endpoints then come from
its adapter, the code location builds, and the demo and the stack point it at the local
exchange, without an edit of ``settings.py``, ``demo.py`` or ``stack.py``.
"""

from __future__ import annotations

import re
from typing import ClassVar

import pytest

from petrosa_pipelines import exchanges, settings
from petrosa_pipelines.exchanges.bybit.adapter import BybitLinearAdapter
from petrosa_pipelines.lib.endpoints import ExchangeEndpoints
from petrosa_pipelines.local_exchange import venues
from petrosa_pipelines.local_exchange.venues.bybit.wire import BybitWire
from petrosa_pipelines.settings import SettingError, from_env

#: made-up hosts (``.invalid``, RFC 2606): nothing here is ever contacted
OKX_LIVE = ExchangeEndpoints(
    rest_base_url="https://rest.okx.invalid",
    ws_base_url="wss://ws.okx.invalid",
    vision_base_url="https://archive.okx.invalid",
)
OKX_VARS = (
    "PETROSA_OKX_SWAP_REST_BASE_URL",
    "PETROSA_OKX_SWAP_WS_BASE_URL",
    "PETROSA_OKX_SWAP_ARCHIVE_BASE_URL",
)


class FakeOkxSwap(BybitLinearAdapter):
    """OKX USDT swaps (a Bybit adapter renamed: only the registries know it)."""

    venue: ClassVar[str] = "okx-swap"
    name: ClassVar[str] = "okx-swap"
    symbol_pattern: ClassVar[re.Pattern[str]] = re.compile(r"[A-Z0-9]+-[A-Z0-9]+-SWAP")
    default_endpoints: ClassVar[ExchangeEndpoints] = OKX_LIVE


class FakeOkxWire(BybitWire):
    """The local exchange's side of the fake venue (Bybit's wire under another id)."""

    venue: ClassVar[str] = "okx-swap"

    @classmethod
    def endpoints(cls, base_url: str) -> ExchangeEndpoints:
        base = base_url.rstrip("/")
        return ExchangeEndpoints(base, base.replace("http://", "ws://", 1), f"{base}/okx")


class NoDefaults(BybitLinearAdapter):
    """A venue that declares no live endpoints (a Bybit subclass under another id does not
    inherit Bybit's hosts)."""

    venue: ClassVar[str] = "nodefault-swap"
    name: ClassVar[str] = "nodefault-swap"


def _value(metadata: object) -> object:
    """A metadata entry's plain value (``AssetSpec`` may keep it raw or wrapped)."""
    return getattr(metadata, "value", metadata)


@pytest.fixture
def okx(monkeypatch):
    monkeypatch.setitem(exchanges.EXCHANGES, "okx-swap", FakeOkxSwap)
    monkeypatch.setitem(venues.WIRES, "okx-swap", FakeOkxWire)
    return FakeOkxSwap


# -- (a) every registered venue is spoken by the local exchange ----------------------------------
def test_the_local_exchange_speaks_every_registered_venue():
    assert set(venues.WIRES) == set(exchanges.EXCHANGES)
    for venue, wire in venues.WIRES.items():
        assert wire.venue == venue
        urls = wire.endpoints("http://127.0.0.1:1")
        assert urls.rest_base_url.startswith("http://127.0.0.1:1")
        assert urls.ws_base_url.startswith("ws://127.0.0.1:1")


def test_every_registered_venue_declares_its_live_endpoints():
    for venue, cls in exchanges.EXCHANGES.items():
        assert cls.declared_endpoints() is not None, venue
        assert settings.live_endpoints(venue) == cls.declared_endpoints()
        assert settings.LIVE_ENDPOINTS[venue] == cls.declared_endpoints()  # the old mapping


# -- (b) a third venue: one package plus one registry line ---------------------------------------
def test_a_third_venue_gets_its_endpoints_from_its_adapter(okx):
    s = from_env({})
    assert s.endpoints_for("okx-swap") == OKX_LIVE
    assert s.for_venue("okx-swap").endpoints == OKX_LIVE
    assert settings.LIVE_ENDPOINTS["okx-swap"] == OKX_LIVE
    # its variables override its defaults like any venue's
    s = from_env({"PETROSA_OKX_SWAP_WS_BASE_URL": "ws://127.0.0.1:9"})
    assert s.endpoints_for("okx-swap") == ExchangeEndpoints(
        OKX_LIVE.rest_base_url, "ws://127.0.0.1:9", OKX_LIVE.vision_base_url
    )
    assert {var for var, _ in settings.env_documentation()} >= set(OKX_VARS)


def test_a_third_venue_s_ingest_group_defaults_to_its_live_endpoints(okx):
    from petrosa_pipelines.ingest.config import IngestConfig

    cfg = IngestConfig(group="okx", symbols=("BTC-USDT-SWAP",), exchange="okx-swap")
    assert (cfg.ws_base_url, cfg.rest_base_url) == (OKX_LIVE.ws_base_url, OKX_LIVE.rest_base_url)


@pytest.fixture(scope="module")
def build_definitions():
    """The code location's builder, imported before the fake venue is registered: the import
    builds the module's ``defs``, which other tests read."""
    from petrosa_pipelines.definitions import build_definitions

    return build_definitions


def test_the_code_location_builds_with_a_third_venue(build_definitions, okx):
    from petrosa_pipelines.landing.assets import exchange_source_specs

    specs = [s for s in exchange_source_specs() if s.tags.get("venue") == "okx-swap"]
    assert specs, "no feed assets for the new venue"
    endpoints = {
        _value(s.metadata["endpoint_setting"]): _value(s.metadata["endpoint"]) for s in specs
    }
    assert endpoints["PETROSA_OKX_SWAP_WS_BASE_URL"] == OKX_LIVE.ws_base_url
    defs = build_definitions()
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert any("okx-swap" in key for key in keys), sorted(keys)


def test_the_demo_and_the_stack_point_a_third_venue_at_the_local_exchange(okx, tmp_path):
    from petrosa_pipelines.tooling.demo import local_endpoint_env
    from petrosa_pipelines.tooling.stack import Stack, StackConfig

    base = "http://127.0.0.1:8765"
    demo = local_endpoint_env(base)
    assert demo["PETROSA_OKX_SWAP_ARCHIVE_BASE_URL"] == f"{base}/okx"
    assert demo["PETROSA_OKX_SWAP_WS_BASE_URL"] == "ws://127.0.0.1:8765"
    # the two venues that were there keep the URLs the demo always gave them
    assert demo["PETROSA_REST_BASE_URL"] == base
    assert demo["PETROSA_WS_BASE_URL"] == "ws://127.0.0.1:8765"
    assert demo["PETROSA_VISION_BASE_URL"] == f"{base}/vision"
    assert demo["PETROSA_BYBIT_LINEAR_ARCHIVE_BASE_URL"] == base
    stack = Stack(StackConfig(workdir=tmp_path, exchange_port=8765))
    stack._ports = {"exchange": 8765}
    env = stack.env
    assert {k: env[k] for k in demo} == demo
    # and the settings read back what was set: every venue on the local exchange
    s = from_env(demo)
    assert s.endpoints_for("okx-swap") == FakeOkxWire.endpoints(base)
    assert s.endpoints_for("bybit-linear").vision_base_url == base


# -- (c) a venue without live endpoints: an error naming its variables ---------------------------
def test_a_venue_without_live_endpoints_names_the_variables_to_set(monkeypatch):
    monkeypatch.setitem(exchanges.EXCHANGES, "nodefault-swap", NoDefaults)
    assert NoDefaults.declared_endpoints() is None  # Bybit's hosts are not inherited
    assert "nodefault-swap" not in settings.LIVE_ENDPOINTS
    names = [f"PETROSA_NODEFAULT_SWAP_{k}" for k in settings.VENUE_URL_VARS]
    with pytest.raises(SettingError) as info:
        from_env({}).endpoints_for("nodefault-swap")
    assert all(name in str(info.value) for name in names), str(info.value)
    with pytest.raises(SettingError, match="PETROSA_NODEFAULT_SWAP_REST_BASE_URL"):
        settings.live_endpoints("nodefault-swap")

    from petrosa_pipelines.ingest.config import IngestConfig

    with pytest.raises(ValueError, match="PETROSA_NODEFAULT_SWAP_WS_BASE_URL"):
        IngestConfig(group="x", symbols=("BTCUSDT",), exchange="nodefault-swap")
    # set, they are its endpoints
    urls = ("http://127.0.0.1:1", "ws://127.0.0.1:1", "http://127.0.0.1:1/a")
    given = dict(zip(names, urls, strict=True))
    assert from_env(given).endpoints_for("nodefault-swap") == ExchangeEndpoints(
        "http://127.0.0.1:1", "ws://127.0.0.1:1", "http://127.0.0.1:1/a"
    )
    # and the code location's feed assets still build, showing the variable to set
    from petrosa_pipelines.landing.assets import exchange_source_specs

    specs = [s for s in exchange_source_specs() if s.tags.get("venue") == "nodefault-swap"]
    assert specs
    assert all(
        str(_value(s.metadata["endpoint_setting"])).startswith("PETROSA_NODEFAULT_") for s in specs
    )
