"""A local exchange and resources pointed at it, for end-to-end materialisation tests."""

import pytest

from petrosa_pipelines.local_exchange import Faults, LocalExchange, MarketConfig
from resources import ExchangeResource, LakeIOManager, LandingResource

TRADES_PER_DAY = 5_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture(scope="module")
def local_exchange():
    market = MarketConfig(seed=11, symbols=SYMBOLS, trades_per_day=TRADES_PER_DAY)
    with LocalExchange(market=market, faults=Faults(), host="127.0.0.1", port=0) as ex:
        yield ex


@pytest.fixture
def exchange_resource(local_exchange):
    local_exchange.faults.bad_checksum = False
    return ExchangeResource(
        rest_base_url=local_exchange.rest_base_url,
        ws_base_url=local_exchange.ws_base_url,
        vision_base_url=local_exchange.vision_base_url,
    )


@pytest.fixture
def resources(tmp_path, exchange_resource):
    return {
        "exchange": exchange_resource,
        "landing": LandingResource(root=str(tmp_path / "landing")),
        "io_manager": LakeIOManager(base_path=str(tmp_path / "lake")),
    }
