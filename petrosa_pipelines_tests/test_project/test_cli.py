"""The ``petrosa`` console script dispatches to its subcommands."""

import pytest

from petrosa_pipelines.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for sub in ("exchange", "demo", "instance", "catalog", "stack"):
        assert sub in out


def test_exchange_delegates_to_the_local_exchange(capsys):
    with pytest.raises(SystemExit) as info:
        main(["exchange", "serve", "--help"])
    assert info.value.code == 0
    assert "--seed" in capsys.readouterr().out


def test_instance_writes_dagster_yaml(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PETROSA_DAGSTER_POSTGRES_URL", raising=False)
    assert main(["instance", "--home", str(tmp_path)]) == 0
    assert (tmp_path / "dagster.yaml").read_text().startswith("# Dagster instance")


def test_stack_delegates(capsys):
    with pytest.raises(SystemExit) as info:
        main(["stack", "--help"])
    assert info.value.code == 0
    assert "stack" in capsys.readouterr().out
