"""The fast lane (``python3 tasks.py test --fast``) keeps out every test that starts a server."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from petrosa_pipelines_tests.conftest import is_slow

HERE = Path(__file__)


@dataclass
class _CallSpec:
    params: dict


@dataclass
class _Item:
    """What ``is_slow`` reads of a collected pytest item."""

    path: Path = HERE
    fixturenames: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)

    def iter_markers(self, name: str):
        return iter([name] if name in self.markers else [])

    @property
    def callspec(self) -> _CallSpec:
        return _CallSpec(self.params)


def test_a_pure_test_is_fast():
    assert not is_slow(_Item(fixturenames=("tmp_path",)))


def test_markers_folders_and_server_fixtures_are_slow():
    assert is_slow(_Item(markers=("slow",)))
    assert is_slow(_Item(markers=("integration",)))
    assert is_slow(_Item(path=HERE.parents[1] / "test_stack" / "test_x.py"))
    assert is_slow(_Item(fixturenames=("tmp_path", "postgres_db")))


def test_the_postgresql_case_of_a_storage_parametrised_instance_is_slow():
    # the fixture asks for postgres_db at run time, so fixturenames does not show it
    for name in ("instance", "any_instance"):
        assert is_slow(_Item(fixturenames=(name,), params={name: "postgres"}))
        assert not is_slow(_Item(fixturenames=(name,), params={name: "sqlite"}))
