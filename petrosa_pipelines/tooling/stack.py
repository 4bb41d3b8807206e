"""The production topology on loopback, as separate processes: ``petrosa stack``.

Why this exists: the demo runs everything in one process on SQLite, which hides every problem
that only shows up once the parts are apart (a code server that fails to load, runs launched by
the daemon through gRPC, storage shared over PostgreSQL, a webserver reading another process's
events). The stack starts the same five parts as docker-compose and Kubernetes do, here and
without a container engine:

    PostgreSQL (Dagster storage)  <-  code server (``dagster api grpc``)  <-  webserver, daemon
    local exchange (``python -m petrosa_pipelines.local_exchange serve``)  <-  runs

and waits until every part answers (exchange ping, gRPC ping + health, ``/server_info`` with the
code location loaded, every required daemon healthy). ``Stack`` is a context manager, so tests
use the very topology the CLI starts. Stopping is ordered: the daemon first (nothing new is
launched), then in-progress runs are terminated through GraphQL, then webserver, code server,
exchange, and the PostgreSQL cluster when the stack started one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from petrosa_pipelines.tooling.graphql_client import (  # noqa: F401 - re-exported for stack users
    LOCATION_NAME,
    REPOSITORY_NAME,
    StackError,
    graphql,
)
from petrosa_pipelines.tooling.instance import POSTGRES_URL_VAR, REPO_ROOT, instance_yaml

DEFINITIONS_MODULE = "petrosa_pipelines.definitions"
LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: the stack's own database on a shared server: Dagster's tables never mix with anything else
STACK_DATABASE = "petrosa_dagster"
DEFAULT_WORKDIR = REPO_ROOT / "data" / "stack"
STATE_FILE = "stack.json"
IN_PROGRESS_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")


# --- PostgreSQL -------------------------------------------------------------------------------


def postgres_answers(url: str, timeout: float = 3.0) -> bool:
    """True when ``url`` (psycopg form) accepts a connection and a query."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("select 1")
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable", the caller tries the next
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (another process may still take it: bind soon)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def psycopg2_url(url: str) -> str:
    """The same URL with the explicit psycopg2 driver Dagster's storage needs.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which breaks dagster-postgres
    (the SQLAlchemy pin in pyproject.toml), so the storage URL always names its driver.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a URL: {url!r}")
    return f"postgresql+psycopg2://{rest}" if scheme.startswith("postgres") else url


def psycopg_url(url: str) -> str:
    """The plain ``postgresql://`` form psycopg (3) connects with."""
    _, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a URL: {url!r}")
    return f"postgresql://{rest}"


def database_url(server_url: str, database: str) -> str:
    """``server_url`` pointed at another database (keeps user, host, port and query)."""
    head, sep, tail = server_url.partition("?")
    base, _, _ = head.rpartition("/")
    return f"{base}/{database}{sep}{tail}"


def ensure_database(server_url: str, database: str) -> str:
    """Create ``database`` on the server unless it exists; returns its psycopg URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(psycopg_url(server_url), autocommit=True) as conn:
        exists = conn.execute(
            "select 1 from pg_database where datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
    return database_url(psycopg_url(server_url), database)


@dataclass
class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) in a temporary directory.

    Used when no server answers: tests and ``petrosa stack`` then still run on real PostgreSQL.
    As root, initdb refuses to run, so the binaries run as the ``postgres`` user.
    """

    port: int = 0
    root: Path | None = None
    bindir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> PostgresCluster:
        bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        if not bindirs:
            raise StackError(
                "no PostgreSQL answers and no PostgreSQL binaries are installed under "
                "/usr/lib/postgresql to start one (apt-get install -y postgresql)"
            )
        self.bindir = bindirs[0]
        self.root = Path(tempfile.mkdtemp(prefix="petrosa-pg-"))
        data, sock = self.root / "data", self.root / "sock"
        sock.mkdir()
        self.port = self.port or free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(sock, "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
        opts = f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-o", f"'{opts}'", "-w", "start")
        deadline = time.monotonic() + timeout
        while not postgres_answers(self.url):
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"throwaway PostgreSQL at {self.url} did not answer")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.root is None or self.bindir is None:
            return
        try:
            data = self.root / "data"
            self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _run(self, *cmd: str) -> None:
        full = ["su", "postgres", "-c", " ".join(cmd)] if os.geteuid() == 0 else list(cmd)
        subprocess.run(full, check=True, capture_output=True)


def resolve_postgres(
    explicit_url: str | None = None, environ: Mapping[str, str] | None = None
) -> tuple[str, PostgresCluster | None]:
    """The Dagster storage URL (psycopg2 form) and the cluster to stop afterwards, if any.

    Order: an explicit URL, ``PETROSA_DAGSTER_POSTGRES_URL``, a dedicated database on the local
    server at 127.0.0.1:5432, and last a throwaway cluster (its data goes when the stack stops).
    """
    env = os.environ if environ is None else environ
    url = explicit_url or env.get(POSTGRES_URL_VAR, "").strip()
    if url:
        return psycopg2_url(url), None
    if postgres_answers(LOCAL_POSTGRES_URL):
        return psycopg2_url(ensure_database(LOCAL_POSTGRES_URL, STACK_DATABASE)), None
    cluster = PostgresCluster().start()
    return psycopg2_url(ensure_database(cluster.url, STACK_DATABASE)), cluster


# --- processes --------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 5.0) -> bytes:
    """GET ``url``; raises on any non-2xx answer or connection failure."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URLs
        return resp.read()


@dataclass
class Service:
    """One process of the stack: how to start it and how to tell that it answers."""

    name: str
    argv: list[str]
    address: str
    ready: Callable[[], bool]
    log_path: Path
    proc: subprocess.Popen | None = None
    _log_file: Any = None

    def start(self, env: Mapping[str, str], cwd: Path) -> None:
        self._log_file = self.log_path.open("ab")
        # a session of its own: Ctrl-C in the terminal reaches only the stack, which then stops
        # the parts in order; killpg later also takes the children (run workers) with it
        self.proc = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=cwd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left in the process group (a stuck server, orphaned run workers) goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


@dataclass
class StackConfig:
    """Where the stack lives, its ports (0 = a free one) and the market it serves."""

    workdir: Path = DEFAULT_WORKDIR
    host: str = "127.0.0.1"
    webserver_port: int = 3000
    grpc_port: int = 4000
    exchange_port: int = 8765
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    seed: int = 7
    trades_per_day: int = 20_000
    #: Dagster storage; None resolves it (see ``resolve_postgres``)
    postgres_url: str | None = None
    startup_timeout: float = 240.0
    extra_env: dict[str, str] = field(default_factory=dict)
    #: the command that runs the daemon, before its ``run -w <workspace>`` (empty:
    #: ``dagster-daemon``); the tests pass one whose backfill loop looks more often
    daemon_command: tuple[str, ...] = ()


class Stack:
    """The running topology; ``with Stack(StackConfig(...)) as stack:`` in tests."""

    def __init__(self, config: StackConfig | None = None, log: Callable[[str], None] = print):
        self.config = config or StackConfig()
        self.log = log
        self.workdir = Path(self.config.workdir).resolve()
        self.dagster_home = self.workdir / "dagster_home"
        self.services: list[Service] = []
        self.postgres_url = ""
        self._cluster: PostgresCluster | None = None
        self._ports: dict[str, int] = {}

    # addresses ---------------------------------------------------------------------------------
    @property
    def webserver_url(self) -> str:
        return f"http://{self.config.host}:{self._ports['webserver']}"

    @property
    def graphql_url(self) -> str:
        return f"{self.webserver_url}/graphql"

    @property
    def exchange_url(self) -> str:
        return f"http://{self.config.host}:{self._ports['exchange']}"

    @property
    def grpc_port(self) -> int:
        return self._ports["grpc"]

    @property
    def env(self) -> dict[str, str]:
        """The environment every Dagster process of the stack gets (and run workers inherit)."""
        from petrosa_pipelines.local_exchange.venues import WIRES
        from petrosa_pipelines.settings import endpoint_env

        # every venue the local exchange speaks, at its URLs on the exchange's one port
        venues: dict[str, str] = {}
        for venue, wire in WIRES.items():
            venues.update(endpoint_env(venue, wire.endpoints(self.exchange_url)))
        return {
            **os.environ,
            "DAGSTER_HOME": str(self.dagster_home),
            POSTGRES_URL_VAR: self.postgres_url,
            **venues,
            "PETROSA_LAKE_PATH": str(self.workdir / "lake"),
            "PETROSA_LANDING_PATH": str(self.workdir / "landing"),
            "PETROSA_SYMBOLS": ",".join(self.config.symbols),
            # one IP, one request-weight budget: every run process of the stack shares it
            "PETROSA_WEIGHT_BUDGET_DIR": str(self.workdir / "weight_budget"),
            **self.config.extra_env,
        }

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict:
        """Query the stack's webserver."""
        return graphql(self.graphql_url, query, variables)

    @contextlib.contextmanager
    def instance(self) -> Iterator[Any]:
        """A ``DagsterInstance`` on the stack's storage, for reading runs, events and backfills."""
        import dagster as dg

        with _patched_environ({POSTGRES_URL_VAR: self.postgres_url}):
            inst = dg.DagsterInstance.from_config(str(self.dagster_home))
        try:
            yield inst
        finally:
            inst.dispose()

    # lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Stack:
        """Start every part in dependency order, each answering before the next starts."""
        try:
            self._prepare()
            for service in self._build_services():
                self.services.append(service)
                service.start(self.env, REPO_ROOT)
                self._wait_ready(service)
                self.log(f"{service.name:<10} {service.address}")
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop in reverse order; in-progress runs are terminated before their code server goes."""
        daemon = [s for s in self.services if s.name == "daemon"]
        for service in daemon:
            service.stop()
        if any(s.name == "webserver" and s.running() for s in self.services):
            with contextlib.suppress(Exception):
                self.terminate_runs()
        for service in reversed([s for s in self.services if s.name != "daemon"]):
            service.stop()
        self.services.clear()
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / STATE_FILE).unlink()

    def terminate_runs(self, timeout: float = 30.0) -> int:
        """Terminate every queued or running run (the ingest never ends by itself).

        A safe termination first (the code server interrupts the run worker, which records
        CANCELED); runs still alive at the deadline are only marked canceled, so storage never
        keeps a STARTED run whose process is gone.
        """
        ids = self.run_ids(IN_PROGRESS_STATUSES)
        if not ids:
            return 0
        mutation = """mutation($ids: [String!]!, $policy: TerminateRunPolicy) {
                 terminateRuns(runIds: $ids, terminatePolicy: $policy) { __typename } }"""
        self.graphql(mutation, {"ids": ids, "policy": "SAFE_TERMINATE"})
        deadline = time.monotonic() + timeout
        left = ids
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            left = self.run_ids(IN_PROGRESS_STATUSES + ("CANCELING",))
        if left:
            self.graphql(mutation, {"ids": left, "policy": "MARK_AS_CANCELED_IMMEDIATELY"})
        return len(ids)

    def run_ids(self, statuses: Sequence[str]) -> list[str]:
        data = self.graphql(
            """query($statuses: [RunStatus!]) {
                 runsOrError(filter: {statuses: $statuses}) {
                   ... on Runs { results { runId } } } }""",
            {"statuses": list(statuses)},
        )
        return [r["runId"] for r in data["runsOrError"].get("results", [])]

    # internals ---------------------------------------------------------------------------------
    def _prepare(self) -> None:
        for sub in ("logs", "lake", "landing", "weight_budget"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        self.postgres_url, self._cluster = resolve_postgres(self.config.postgres_url)
        (self.dagster_home / "dagster.yaml").write_text(
            instance_yaml({POSTGRES_URL_VAR: self.postgres_url})
        )
        for name in ("webserver", "grpc", "exchange"):
            port = getattr(self.config, f"{name}_port")
            self._ports[name] = port or free_port(self.config.host)
        workspace = {
            "load_from": [
                {
                    "grpc_server": {
                        "host": self.config.host,
                        "port": self._ports["grpc"],
                        "location_name": LOCATION_NAME,
                    }
                }
            ]
        }
        (self.workdir / "workspace.yaml").write_text(json.dumps(workspace, indent=2))
        self.log(f"{'postgres':<10} {_hide_password(self.postgres_url)}")

    def _build_services(self) -> list[Service]:
        bindir = Path(sys.executable).parent
        host, logs = self.config.host, self.workdir / "logs"
        workspace = str(self.workdir / "workspace.yaml")
        p = self._ports
        exchange = [
            sys.executable, "-m", "petrosa_pipelines.local_exchange", "serve",
            "--host", host, "--port", str(p["exchange"]), "--seed", str(self.config.seed),
            "--symbols", ",".join(market_symbols(self.config.symbols)),
            "--trades-per-day", str(self.config.trades_per_day),
        ]  # fmt: skip
        code = [
            str(bindir / "dagster"), "api", "grpc", "-h", host, "-p", str(p["grpc"]),
            "-m", DEFINITIONS_MODULE, "--location-name", LOCATION_NAME,
        ]  # fmt: skip
        web = [str(bindir / "dagster-webserver"), "-h", host, "-p", str(p["webserver"]),
               "-w", workspace]  # fmt: skip
        daemon_command = self.config.daemon_command or (str(bindir / "dagster-daemon"),)
        daemon = [*daemon_command, "run", "-w", workspace]
        return [
            Service("exchange", exchange, self.exchange_url, self._exchange_ready,
                    logs / "exchange.log"),
            Service("code", code, f"grpc://{host}:{p['grpc']}", self._grpc_ready,
                    logs / "code.log"),
            Service("webserver", web, self.webserver_url, self._webserver_ready,
                    logs / "webserver.log"),
            Service("daemon", daemon, "dagster-daemon (all required daemons healthy)",
                    self._daemon_ready, logs / "daemon.log"),
        ]  # fmt: skip

    def _wait_ready(self, service: Service) -> None:
        deadline = time.monotonic() + self.config.startup_timeout
        while True:
            if not service.running():
                code = service.proc.returncode if service.proc else "?"
                raise StackError(
                    f"{service.name} exited with code {code}; "
                    f"last lines of {service.log_path}:\n{service.log_tail()}"
                )
            try:
                if service.ready():
                    return
            except StackError:
                raise
            except Exception:  # noqa: BLE001, S110 - not answering yet; the deadline decides
                pass
            if time.monotonic() > deadline:
                raise StackError(
                    f"{service.name} did not answer within {self.config.startup_timeout:.0f} s; "
                    f"last lines of {service.log_path}:\n{service.log_tail()}"
                )
            time.sleep(0.5)

    def _exchange_ready(self) -> bool:
        http_get(f"{self.exchange_url}/fapi/v1/ping", timeout=2)
        return True

    def _grpc_ready(self) -> bool:
        from dagster._grpc.client import DagsterGrpcClient

        client = DagsterGrpcClient(port=self.grpc_port, host=self.config.host)
        client.ping("petrosa")  # raises until the server listens
        return client.health_check_query() == "SERVING"

    def _webserver_ready(self) -> bool:
        http_get(f"{self.webserver_url}/server_info", timeout=2)
        data = self.graphql(
            """{ workspaceOrError { ... on Workspace { locationEntries {
                   name loadStatus
                   locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
        )
        entries = data["workspaceOrError"].get("locationEntries", [])
        for entry in entries:
            error = entry.get("locationOrLoadError") or {}
            if error.get("__typename") == "PythonError":
                raise StackError(f"code location {entry['name']} failed: {error['message']}")
        return bool(entries) and all(
            e["loadStatus"] == "LOADED" and e.get("locationOrLoadError") for e in entries
        )

    def _daemon_ready(self) -> bool:
        data = self.graphql(
            """{ instance { daemonHealth { allDaemonStatuses {
                   daemonType required healthy } } } }"""
        )
        statuses = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        required = [s for s in statuses if s["required"]]
        return bool(required) and all(s["healthy"] for s in required)

    def _write_state(self) -> None:
        state = {
            "webserver_url": self.webserver_url,
            "graphql_url": self.graphql_url,
            "exchange_url": self.exchange_url,
            "grpc": f"{self.config.host}:{self.grpc_port}",
            "dagster_home": str(self.dagster_home),
            "postgres_url": self.postgres_url,
            "pid": os.getpid(),
        }
        path = self.workdir / STATE_FILE
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)  # the storage URL may carry a password


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, hostpart = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{hostpart}"


@contextlib.contextmanager
def _patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def read_state(workdir: Path = DEFAULT_WORKDIR) -> dict[str, Any]:
    """Addresses of the stack running from ``workdir`` (written once every part answered)."""
    path = Path(workdir) / STATE_FILE
    if not path.exists():
        raise StackError(f"no stack is running from {workdir} (no {path}); start `petrosa stack`")
    return json.loads(path.read_text())


def new_run_token() -> str:
    """A short unique token for titles and database names (tests, repeated backfills)."""
    return uuid.uuid4().hex[:10]


# --- CLI ----------------------------------------------------------------------------------------

MARKET_DATA_ASSETS = ("market_data/trades", "market_data/candles", "market_data/depth",
                      "market_data/funding")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """``petrosa stack [up] ...`` and ``petrosa stack backfill ...``."""
    parser = argparse.ArgumentParser(prog="petrosa stack", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    up = sub.add_parser("up", help="start every part, print addresses, run until Ctrl-C (default)")
    _add_up_arguments(up)
    bf = sub.add_parser("backfill", help="launch a backfill on the running stack, show progress")
    bf.add_argument("--start", required=True, type=dt_date, help="first day, YYYY-MM-DD")
    bf.add_argument("--end", type=dt_date, help="last day (default: --start)")
    bf.add_argument(
        "--include-today",
        action="store_true",
        help="also build today's open day so far (a backfill builds closed days)",
    )
    bf.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    bf.add_argument("--assets", default=",".join(MARKET_DATA_ASSETS), help="asset key paths")
    bf.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    bf.add_argument("--no-follow", action="store_true", help="launch and print the id only")
    bf.add_argument("--timeout", type=float, default=None, help="give up following after N s")
    return parser


def _add_up_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="lake, logs, home")
    p.add_argument("--host", default="127.0.0.1", help="every part binds here (loopback)")
    p.add_argument("--webserver-port", type=int, default=3000, help="0 = any free port")
    p.add_argument("--grpc-port", type=int, default=4000)
    p.add_argument("--exchange-port", type=int, default=8765)
    p.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    p.add_argument("--seed", type=int, default=7, help="the local exchange's market seed")
    p.add_argument("--trades-per-day", type=int, default=20_000)
    p.add_argument(
        "--postgres-url",
        default=None,
        help=f"Dagster storage (default: ${POSTGRES_URL_VAR}, else a '{STACK_DATABASE}' "
        "database on 127.0.0.1:5432, else a throwaway cluster)",
    )


def dt_date(text: str) -> dt.date:
    """argparse type: an ISO date."""
    return dt.date.fromisoformat(text)


def _symbols(text: str) -> tuple[str, ...]:
    """Instrument ids of ``--symbols`` (ids or bare Binance USD-M symbols)."""
    from petrosa_pipelines.lib.argtypes import instrument_list

    return instrument_list(text)


def market_symbols(instrument_ids: Sequence[str]) -> tuple[str, ...]:
    """The local exchange's market symbols for ``instrument_ids``: every venue it speaks serves
    the same market, so ``binance-usdm:BTCUSDT`` and ``bybit-linear:BTCUSDT`` are one symbol."""
    from petrosa_pipelines.instruments import parse_instrument

    return tuple(dict.fromkeys(parse_instrument(i).symbol for i in instrument_ids))


def run_up(args: argparse.Namespace) -> int:
    """Start the stack and keep it up until Ctrl-C or SIGTERM; 1 when a part dies."""
    config = StackConfig(
        workdir=args.workdir,
        host=args.host,
        webserver_port=args.webserver_port,
        grpc_port=args.grpc_port,
        exchange_port=args.exchange_port,
        symbols=_symbols(args.symbols),
        seed=args.seed,
        trades_per_day=args.trades_per_day,
        postgres_url=args.postgres_url,
    )

    def _sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _sigterm)
    stack = Stack(config)
    code = 0
    try:
        print(f"starting the stack in {stack.workdir} (logs in {stack.workdir / 'logs'})")
        stack.start()
        print(f"\nDagster UI: {stack.webserver_url}   GraphQL: {stack.graphql_url}")
        print(f"backfill:   petrosa stack backfill --start 2024-02-01 --symbols "
              f"{','.join(config.symbols)}")  # fmt: skip
        print("Ctrl-C stops the stack", flush=True)
        while all(s.running() for s in stack.services):
            time.sleep(1.0)
        dead = [s for s in stack.services if not s.running()]
        for service in dead:
            print(f"{service.name} stopped unexpectedly:\n{service.log_tail()}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("\nstopping the stack", flush=True)
    except StackError as exc:
        print(f"stack failed: {exc}", file=sys.stderr)
        code = 1
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, previous)
    print("stack stopped")
    return code


def run_backfill(args: argparse.Namespace) -> int:
    """Register the symbols, launch the backfill via GraphQL, follow it on the instance."""
    import dagster as dg

    from petrosa_pipelines.tooling.backfill import add_symbols, follow_backfill, launch_backfill
    from petrosa_pipelines.tooling.backfill import partition_keys as make_keys

    state = read_state(args.workdir)
    symbols = _symbols(args.symbols)
    keys = make_keys(
        args.start, args.end or args.start, symbols, include_open_day=args.include_today
    )
    assets = [a.strip().split("/") for a in args.assets.split(",") if a.strip()]
    add_symbols(state["graphql_url"], symbols)
    backfill_id = launch_backfill(
        state["graphql_url"], keys, assets, title=f"petrosa stack backfill ({len(keys)} keys)"
    )
    print(f"backfill {backfill_id}: {len(keys)} partitions x {len(assets)} assets")
    print(f"  {state['webserver_url']}/runs/b/{backfill_id}", flush=True)
    if args.no_follow:
        return 0
    with _patched_environ({POSTGRES_URL_VAR: state["postgres_url"]}):
        instance = dg.DagsterInstance.from_config(state["dagster_home"])
    try:
        progress = follow_backfill(instance, backfill_id, timeout=args.timeout)
    finally:
        instance.dispose()
    return 0 if progress.status == "COMPLETED_SUCCESS" else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of ``petrosa stack``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv = ["up", *argv]
    args = build_parser().parse_args(argv)
    try:
        if args.command == "backfill":
            return run_backfill(args)
        return run_up(args)
    except StackError as exc:
        print(f"petrosa stack: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
