"""Shared fixtures: a real PostgreSQL server (never skipped), a fresh Dagster instance."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("select 1")
        return True
    except Exception:  # noqa: BLE001
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_throwaway_cluster() -> tuple[str, callable]:
    """initdb + pg_ctl from the installed binaries (as the postgres user when we are root)."""
    if not PG_BIN_DIRS:
        raise RuntimeError(
            "no PostgreSQL answers at PETROSA_TEST_POSTGRES_URL or 127.0.0.1:5432 and no "
            "PostgreSQL binaries are installed under /usr/lib/postgresql to start one"
        )
    bindir = PG_BIN_DIRS[0]
    root = Path(tempfile.mkdtemp(prefix="petrosa-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    port = _free_port()
    as_postgres = os.geteuid() == 0
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")

    def run(*cmd: str) -> None:
        full = ["su", "postgres", "-c", " ".join(cmd)] if as_postgres else list(cmd)
        subprocess.run(full, check=True, capture_output=True)

    run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", f"'{opts}'", "-w", "start")

    def stop() -> None:
        try:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


@pytest.fixture(scope="session")
def postgres_server_url():
    """A PostgreSQL server URL (psycopg form): the configured one, the local one, or a new one."""
    candidates = [
        os.environ.get("PETROSA_TEST_POSTGRES_URL"),
        "postgresql://postgres@127.0.0.1:5432/postgres",
    ]
    for url in candidates:
        if url and _answers(url):
            yield url
            return
    url, stop = _start_throwaway_cluster()
    deadline = time.monotonic() + 30
    while not _answers(url):
        if time.monotonic() > deadline:
            stop()
            raise RuntimeError(f"throwaway PostgreSQL at {url} did not answer")
        time.sleep(0.2)
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def postgres_db(postgres_server_url):
    """A fresh database for one test, dropped afterwards; yields its psycopg URL."""
    import psycopg

    name = f"petrosa_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    base, _, _ = postgres_server_url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def dagster_instance(tmp_path):
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


LOCAL_TRADES_PER_DAY = 5_000
LOCAL_SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture(scope="module")
def local_exchange():
    """The local exchange (deterministic market, Binance wire formats) on a free port."""
    from petrosa_pipelines.local_exchange import Faults, LocalExchange, MarketConfig

    market = MarketConfig(seed=11, symbols=LOCAL_SYMBOLS, trades_per_day=LOCAL_TRADES_PER_DAY)
    with LocalExchange(market=market, faults=Faults(), host="127.0.0.1", port=0) as ex:
        yield ex


@pytest.fixture
def exchange_resource(local_exchange):
    """The exchange resource pointed at the local exchange, faults cleared."""
    from resources import ExchangeResource

    local_exchange.faults.bad_checksum = False
    return ExchangeResource(
        rest_base_url=local_exchange.rest_base_url,
        ws_base_url=local_exchange.ws_base_url,
        vision_base_url=local_exchange.vision_base_url,
    )


# --- the fast lane: ``python3 tasks.py test --fast`` (pure and in-process tests only) --------

#: fixtures that start servers, clusters, daemons or browsers: a test using one is not "fast"
SLOW_FIXTURES = frozenset(
    {
        "postgres_server_url",
        "postgres_db",
        "warehouse",
        "local_exchange",
        "exchange_resource",
        "exchange",
        "resources",
        "stack",
        "ui_stack",
    }
)
#: folders whose every test drives a whole process topology
SLOW_FOLDERS = frozenset({"test_stack", "test_ui"})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fast",
        action="store_true",
        help="only pure, in-process tests (no servers, daemons, browsers or subprocesses)",
    )


def is_slow(item: pytest.Item) -> bool:
    """Slow by marker, by folder, or by using a fixture that starts a server."""
    if any(any(item.iter_markers(name)) for name in ("slow", "integration", "live")):
        return True
    if SLOW_FOLDERS & set(Path(str(item.path)).parts):
        return True
    return bool(SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--fast"):
        return
    keep = [i for i in items if not is_slow(i)]
    dropped = [i for i in items if is_slow(i)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep
