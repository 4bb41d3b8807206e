"""The ``petrosa`` console script dispatches to its subcommands."""

import pytest

from petrosa_pipelines.tooling.cli import build_parser, main


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


@pytest.mark.parametrize(
    ("args", "option", "why"),
    [
        (["--port", "-1"], "--port", "between 0 and 65535"),
        (["--start-date", "garbage"], "--start-date", "YYYY-MM-DD"),
        (["--trades-per-day", "-5"], "--trades-per-day", ">= 1"),
        (["--speed", "-1"], "--speed", "> 0"),
        (["--speed", "nan"], "--speed", "finite"),
        (["--fault-drop", "2"], "--fault-drop", "<= 1"),
        (["--symbols", "../../etc"], "--symbols", "not a symbol"),
        (["--symbols", ",,,"], "--symbols", "no symbol"),
        (["--now", "tomorrow"], "--now", "ISO time"),
    ],
)
def test_exchange_serve_refuses_bad_arguments_naming_the_option(capsys, args, option, why):
    """Each used to start (or crash with a traceback deep inside the server): ``--symbols
    ../../etc`` even named archive paths outside the tree."""
    with pytest.raises(SystemExit) as info:
        main(["exchange", "serve", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and why in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--days", "0"], "--days"),
        (["--port", "70000"], "--port"),
        (["--ingest-seconds", "-1"], "--ingest-seconds"),
        (["--symbols", "btc/usdt"], "--symbols"),
    ],
)
def test_demo_refuses_bad_arguments_naming_the_option(capsys, args, option):
    with pytest.raises(SystemExit) as info:
        main(["demo", *args])
    assert info.value.code == 2
    assert f"argument {option}:" in capsys.readouterr().err


def test_demo_symbols_are_parsed_once():
    args = build_parser().parse_args(["demo", "--symbols", "btcusdt, ethusdt,btcusdt"])
    assert args.symbols == ("BTCUSDT", "ETHUSDT")
