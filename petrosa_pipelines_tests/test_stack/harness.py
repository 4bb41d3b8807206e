"""One running stack shared by the end-to-end and browser tests of a session.

Starting the stack costs about half a minute and a backfill through the daemon about a minute
and a half, on two cores; paying that once per session keeps the stack and browser tests within
a few minutes. ``test_stack/conftest.py`` and ``test_ui/conftest.py`` each declare a session
fixture over ``SHARED``: whichever runs first starts the stack, the last release stops it, and
either directory also works alone.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petrosa_pipelines import settings
from petrosa_pipelines.instruments import instrument_id, partition_key_str
from petrosa_pipelines.tooling.backfill import (
    BackfillProgress,
    add_symbols,
    follow_backfill,
    launch_backfill,
)
from petrosa_pipelines.tooling.stack import (
    REPOSITORY_NAME,
    Stack,
    StackConfig,
    database_url,
    new_run_token,
    psycopg2_url,
)
from petrosa_pipelines_tests.quick_daemon import quick_daemon_command

SYMBOLS = ("BTCUSDT", "ETHUSDT")
_TODAY = dt.datetime.now(tz=dt.UTC).date()
#: the stack runs the deployment's partition scheme (the suite's own processes run with no
#: window, see the root conftest): the default rolling window of day partitions, and a start
#: 90 days back, so the history family holds the months before the window
WINDOW_DAYS = settings.from_env({}).daily_window_days
START_DATE = (_TODAY - dt.timedelta(days=90)).isoformat()
STACK_ENV = {"PETROSA_DAILY_WINDOW_DAYS": str(WINDOW_DAYS), "PETROSA_START_DATE": START_DATE}
#: a closed day inside the window; not yesterday, which the window sensor builds by itself. One
#: day x two symbols: the backfill, its checks, the analytics and the cross-symbol correlation
#: that follow it are the same per day, and a second day cost the suite four more runs (each a
#: fresh process loading Dagster and great-expectations); two days x four instruments through
#: the daemon are test_market_data/test_backfill_daemon.py's
DAYS = ((_TODAY - dt.timedelta(days=3)).isoformat(),)
#: ``YYYY-MM-DD|binance-usdm:BTCUSDT``: what ``add_symbols`` registers (instrument ids)
KEYS = tuple(partition_key_str(d, instrument_id(s)) for d in DAYS for s in SYMBOLS)
MARKET_DATA = ("trades", "candles", "depth", "funding")
MARKET_DATA_PATHS = tuple(("market_data", name) for name in MARKET_DATA)
#: small days keep a symbol-day run at a few seconds on a shared 2-core machine
TRADES_PER_DAY = 5_000
#: a deadline, not a speed target: the backfill's runs took 105-157 s each at load 8 (each a fresh
#: process importing Dagster and great-expectations), and the whole backfill 302 s (183 s in an
#: idle CI); a CPU burner beside the suite can double that. Below ``STACK_TEST_TIMEOUT_S``, the
#: deadline of every test that may be the one to launch it
BACKFILL_TIMEOUT = 1_000.0
STACK_TEST_TIMEOUT_S = 1_200
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Backfilled:
    """The backfill every stack test looks at (launched once, through GraphQL)."""

    backfill_id: str
    progress: BackfillProgress
    lines: list[str]
    #: why runs of the backfill failed (step and run failure messages), for assertion messages
    failures: list[str]

    def explain(self) -> str:
        return "\n".join(self.lines[-3:] + self.failures)


class SharedStack:
    """A reference-counted ``Stack`` on a fresh PostgreSQL database."""

    def __init__(self) -> None:
        self.stack: Stack | None = None
        self.users = 0
        self._server_url = ""
        self._database = ""
        self._backfilled: Backfilled | None = None

    def acquire(self, workdir: Path, postgres_server_url: str) -> Stack:
        self.users += 1
        if self.stack is None:
            import psycopg

            self._server_url = postgres_server_url
            self._database = f"petrosa_stack_{new_run_token()}"
            with psycopg.connect(postgres_server_url, autocommit=True) as conn:
                conn.execute(f'create database "{self._database}"')
            config = StackConfig(
                workdir=workdir,
                webserver_port=0,
                grpc_port=0,
                exchange_port=0,
                symbols=SYMBOLS,
                trades_per_day=TRADES_PER_DAY,
                postgres_url=psycopg2_url(database_url(postgres_server_url, self._database)),
                # the real daemon, its backfill loop looking every 5 s instead of 30
                daemon_command=quick_daemon_command(),
                extra_env=dict(STACK_ENV),
            )
            stack = Stack(config, log=lambda line: print(f"[stack] {line}", flush=True))
            t0 = time.monotonic()
            try:
                stack.start()
            except BaseException:
                self.users -= 1
                self._drop_database()
                raise
            print(f"[stack] up in {time.monotonic() - t0:.1f}s", flush=True)
            self.stack = stack
        return self.stack

    def release(self) -> None:
        self.users -= 1
        if self.users > 0 or self.stack is None:
            return
        try:
            self.stack.stop()
        finally:
            self.stack = None
            self._backfilled = None
            self._drop_database()

    def backfilled(self) -> Backfilled:
        """Launch the backfill of ``KEYS`` x the four datasets once and wait for it."""
        if self._backfilled is None:
            stack = self._require()
            add_symbols(stack.graphql_url, SYMBOLS)
            backfill_id = launch_backfill(
                stack.graphql_url, KEYS, MARKET_DATA_PATHS, title="stack end-to-end test"
            )
            lines: list[str] = []

            def log(line: str) -> None:
                lines.append(line)
                print(f"[backfill] {line}", flush=True)

            with stack.instance() as instance:
                progress = follow_backfill(
                    instance, backfill_id, interval=2.0, timeout=BACKFILL_TIMEOUT, log=log
                )
                failures = _failure_messages(instance, backfill_id)
            self._backfilled = Backfilled(backfill_id, progress, lines, failures)
        return self._backfilled

    def _require(self) -> Stack:
        if self.stack is None:
            raise RuntimeError("the shared stack is not running")
        return self.stack

    def _drop_database(self) -> None:
        if not self._database:
            return
        import psycopg

        with psycopg.connect(self._server_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{self._database}" with (force)')
        self._database = ""


SHARED = SharedStack()


def _failure_messages(instance: Any, backfill_id: str) -> list[str]:
    import dagster as dg

    messages = []
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    for run in runs:
        if run.status != dg.DagsterRunStatus.FAILURE:
            continue
        for event in instance.all_logs(run.run_id):
            if event.is_dagster_event and event.dagster_event.event_type_value in (
                "STEP_FAILURE",
                "RUN_FAILURE",
            ):
                error = getattr(event.dagster_event.event_specific_data, "error", None)
                detail = error.to_string()[-1500:] if error is not None else ""
                messages.append(f"{run.tags.get('dagster/partition')}: {event.message} {detail}")
    return messages


# --- what the running code location holds (read through GraphQL, so new wiring shows up) -----

REPOSITORY_QUERY = """
query($sel: RepositorySelector!) {
  repositoryOrError(repositorySelector: $sel) {
    __typename
    ... on Repository {
      sensors { name sensorState { status } targets { pipelineName } }
      jobs { name }
      assetNodes {
        assetKey { path }
        groupName
        isPartitioned
        dependencyKeys { path }
        assetChecksOrError { ... on AssetChecks {
          checks { name blocking partitionDefinition { type } } } }
      }
    }
  }
}
"""


def repository(stack: Stack) -> dict[str, Any]:
    """Sensors, jobs and asset nodes (with their checks) of the code location."""
    data = stack.graphql(
        REPOSITORY_QUERY,
        {"sel": {"repositoryLocationName": "petrosa_pipelines", "repositoryName": REPOSITORY_NAME}},
    )
    repo = data["repositoryOrError"]
    assert repo["__typename"] == "Repository", repo
    return repo


def asset_nodes_by_path(repo: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    return {tuple(n["assetKey"]["path"]): n for n in repo["assetNodes"]}


def checks_of(node: dict[str, Any]) -> list[dict[str, Any]]:
    return (node.get("assetChecksOrError") or {}).get("checks", [])


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
        return 200 <= resp.status < 300


def pretty(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:4000]
