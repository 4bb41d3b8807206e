"""The assets depend on protocols their packages define; the ``resources`` package implements
them, and Dagster still injects the bound resource by the parameter's name."""

from __future__ import annotations

import ast
from pathlib import Path

import dagster as dg
import pytest

import petrosa_pipelines
from petrosa_pipelines.market_data.assets import MARKET_DATA_ASSETS
from petrosa_pipelines.market_data.ports import ExchangePort, LandingPort
from petrosa_pipelines.serving.assets import build_storage_assets
from petrosa_pipelines.serving.ports import MongoSinkPort, WarehousePort, mongo_configured
from resources import ExchangeResource, LandingResource, MongoSinkResource, WarehouseResource

PACKAGE = Path(petrosa_pipelines.__file__).parent
#: the only module of the package that may import the code location's resources
WIRING = PACKAGE / "definitions.py"


@pytest.mark.parametrize(
    ("resource", "port"),
    [
        (ExchangeResource(), ExchangePort),
        (LandingResource(), LandingPort),
        (WarehouseResource(url="postgresql://u@h/db"), WarehousePort),
        (MongoSinkResource(url="mongodb://h/"), MongoSinkPort),
    ],
)
def test_each_resource_implements_its_port(resource, port):
    assert isinstance(resource, port)


def _imports_resources(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(
            a.name.split(".")[0] == "resources" for a in node.names
        ):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "resources":
                return True
    return False


def test_only_the_code_location_imports_the_resources_package():
    importers = {
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if _imports_resources(p)
    }
    assert importers == {str(WIRING.relative_to(PACKAGE))}


def test_assets_still_require_their_resources_by_name():
    for asset in MARKET_DATA_ASSETS:
        assert asset.required_resource_keys == {"exchange", "landing", "io_manager"}, asset.key
    for asset in build_storage_assets({"PETROSA_MONGODB_URL": "mongodb://h/"}):
        store = "mongo_sink" if asset.key.path[-1].startswith("mongo_") else "warehouse"
        assert asset.required_resource_keys == {store, "io_manager"}, asset.key


def test_a_port_parameter_receives_the_bound_resource_itself(tmp_path):
    """``dg.ResourceParam[Port]`` is injected like a resource class annotation: the asset gets
    the configured ``ConfigurableResource`` with its methods, not a copy or its config."""
    seen = {}

    @dg.asset
    def probe(landing: dg.ResourceParam[LandingPort]) -> None:
        seen["landing"] = landing
        seen["path"] = landing.path()

    bound = LandingResource(root=str(tmp_path))
    assert dg.materialize([probe], resources={"landing": bound}).success
    assert isinstance(seen["landing"], LandingResource)
    assert seen["path"] == str(tmp_path)


def test_mongo_is_configured_only_by_a_non_blank_url():
    assert mongo_configured({"PETROSA_MONGODB_URL": "mongodb://h/"})
    assert not mongo_configured({"PETROSA_MONGODB_URL": "  "})
    assert not mongo_configured({})
