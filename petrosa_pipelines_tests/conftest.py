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

# Most tests replay real or generated data of fixed past days (2024): they run with every day a
# day partition. The default scheme's rolling window (``PETROSA_DAILY_WINDOW_DAYS``, 56 days,
# older days tracked by month) is what the demo runs on (a clean environment), and what
# test_market_data/test_history.py and test_project/test_partition_window.py exercise.
os.environ.setdefault("PETROSA_DAILY_WINDOW_DAYS", "0")

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
def dagster_instance():
    """An in-memory Dagster instance (what ``dg.materialize`` uses without one): the same SQL
    storage classes on in-memory SQLite. A SQLite instance on disk cost 0.25 s of CPU to open
    and 0.2 s more per run than this one (measured: each new SQLite database loads every alembic
    revision script); the tests that need one on disk open it themselves, and the storages a
    deployment uses are the sensor tests' (SQLite, PostgreSQL) and the stack's (PostgreSQL)."""
    import dagster as dg

    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture
def sqlite_dagster_instance(tmp_path):
    """A SQLite Dagster instance on disk under ``tmp_path``, for what needs its files (run-file
    maintenance) or an instance reference (schedule contexts)."""
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


@pytest.fixture(scope="session")
def finished_demo(tmp_path_factory):
    """One ``petrosa demo --no-ui`` per session (see ``demo_run``), read by the demo test and
    the demo's UI tests; its exit code is theirs to assert."""
    from petrosa_pipelines_tests.demo_run import run_shared_demo

    return run_shared_demo(tmp_path_factory.mktemp("demo"))


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
        "finished_demo",
        # NATS and Redis (petrosa_pipelines_tests/servers.py): a real server, maybe started
        "nats_url",
        "redis_url",
    }
)
#: folders whose every test drives a whole process topology
SLOW_FOLDERS = frozenset({"test_stack", "test_ui"})
#: fixtures parametrised over the storages the project deploys: their ``postgres`` case asks
#: for ``postgres_db`` at run time (``request.getfixturevalue``), out of ``fixturenames``' sight
STORAGE_PARAM_FIXTURES = frozenset({"instance", "any_instance"})


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
    params = getattr(getattr(item, "callspec", None), "params", {})
    if any(params.get(name) == "postgres" for name in STORAGE_PARAM_FIXTURES):
        return True
    return bool(SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))


#: tests sharing one expensive session fixture run in one xdist worker, which then starts it
#: once: (group, the fixtures, the node ids of its tests). By node id because pytest-xdist's own
#: ``xdist_group`` mark renames ``item._nodeid``, which pytest 9 no longer reads (the mark is
#: silently ignored); ``check_groups`` fails the collection when a test using one of these
#: fixtures is outside its group, which would start a second stack or demo in another worker.
XDIST_GROUPS = (
    (
        "stack",  # the process topology and its backfill
        frozenset({"stack", "ui_stack"}),
        (
            "petrosa_pipelines_tests/test_stack/test_end_to_end.py::",
            "petrosa_pipelines_tests/test_ui/test_browser.py::",
        ),
    ),
    (
        "demo",  # the demo run and the UI over it
        frozenset({"finished_demo"}),
        (
            "petrosa_pipelines_tests/test_project/test_demo.py::test_demo_no_ui_",
            "petrosa_pipelines_tests/test_ui/test_demo_ui.py::",
        ),
    ),
    (
        # a module fixture of several minutes (an ingest under faults, then both venues' day
        # materialised): its tests spread over workers built it once per worker
        "bybit_e2e",
        frozenset(),
        ("petrosa_pipelines_tests/test_market_data/test_bybit_end_to_end.py::",),
    ),
)


def group_of(nodeid: str) -> str | None:
    """The xdist group of the test ``nodeid``, if any."""
    return next((g for g, _, prefixes in XDIST_GROUPS if nodeid.startswith(prefixes)), None)


def check_groups(items: list[pytest.Item]) -> None:
    """Every test that uses a group's fixture is in that group."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for name, fixtures, _ in XDIST_GROUPS:
            if fixtures & used and group_of(item.nodeid) != name:
                raise pytest.UsageError(
                    f"{item.nodeid} uses {sorted(fixtures & used)}: add it to the "
                    f"{name!r} group in XDIST_GROUPS (petrosa_pipelines_tests/conftest.py)"
                )


def run_order(item: pytest.Item) -> int:
    """Groups first, then ``slow`` tests, then the rest: started early, the long chains overlap
    with everything else instead of ending the run alone."""
    names = [name for name, _, _ in XDIST_GROUPS]
    group = group_of(item.nodeid)
    if group is not None:
        return names.index(group)
    return len(names) + (0 if any(item.iter_markers("slow")) else 1)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` with the groups of ``XDIST_GROUPS`` (each one work unit)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid) or nodeid

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--fast"):
        keep = [i for i in items if not is_slow(i)]
        dropped = [i for i in items if is_slow(i)]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
        items[:] = keep
        return
    check_groups(items)
    items.sort(key=run_order)  # stable: each module keeps its own order
