"""The top-level ``sensors`` and ``resources`` packages are ours and cannot be shadowed."""

import importlib.metadata
from pathlib import Path

import resources
import sensors

REPO = Path(__file__).resolve().parents[2]


def test_sensors_and_resources_come_from_this_repo():
    for module in (sensors, resources):
        assert Path(module.__file__).resolve().is_relative_to(REPO), module.__file__


def test_no_other_distribution_claims_the_generic_names():
    """pysensors ships a ``sensors`` module and a ``resources`` 0.0.1 exists on PyPI."""
    owners = importlib.metadata.packages_distributions()
    for name in ("sensors", "resources", "petrosa_pipelines"):
        assert owners.get(name) in (None, ["petrosa-pipelines"]), (name, owners.get(name))


def test_wheel_ships_all_three_packages():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert sorted(packages) == ["petrosa_pipelines", "resources", "sensors"]


def test_console_script_is_declared():
    eps = importlib.metadata.entry_points(group="console_scripts")
    assert any(
        ep.name == "petrosa" and ep.value == "petrosa_pipelines.tooling.cli:main" for ep in eps
    )


def test_no_test_folder_named_like_a_top_level_package():
    tests = REPO / "petrosa_pipelines_tests"
    assert not (tests / "sensors").exists() and not (tests / "resources").exists()
    for d in tests.rglob("*"):
        if d.is_dir() and d.name.startswith("test_") and d.name != "__pycache__":
            assert (d / "__init__.py").exists(), f"{d} lacks __init__.py"
