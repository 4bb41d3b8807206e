"""What a newcomer sees after ``petrosa demo``, in the Dagster UI (issue 15's "Done when").

Runs the demo as a fresh clone would (``petrosa demo --no-ui``, two days, one symbol, into a
temporary workdir with its own SQLite ``DAGSTER_HOME``; the session's one demo run, see
``petrosa_pipelines_tests/demo_run.py``), serves that instance with
``dagster-webserver`` and checks, in Debian's Chromium driven by playwright:

- the streamed depth day has rows (``market_data/depth``'s partition page);
- ``analytics/liquidity_heatmap`` has rows and a chart, which opens as a readable PNG;
- no false alarm: every check the demo ran passed, and the alert sensor, evaluated five minutes
  after the demo as the daemon would, sends nothing (no failed check, no "ingest down");
- ``checks/health`` (refreshed as the daemon's ``audit_sensor`` would) shows the
  health grid inline: the streamed day ✅ in every dataset, the day before it ➖ (not
  applicable) for depth, and no ❌ / ⚠️ anywhere.

``PETROSA_DEMO_WORKDIR`` reuses a finished demo's workdir instead of running one (same flags).
With ``PETROSA_UPDATE_SCREENSHOTS=1`` (``scripts/screenshots.py``) the health grid and two charts
are saved under ``docs/screenshots/`` for the README; otherwise under ``artifacts/ui/demo/``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from petrosa_pipelines.checks.definitions import GRID_DATASETS
from petrosa_pipelines.instruments import partition_key_str
from petrosa_pipelines.tooling.instance import REPO_ROOT
from petrosa_pipelines_tests.demo_run import DAYS, DEMO_TEST_TIMEOUT_S, INSTRUMENTS, SYMBOL
from petrosa_pipelines_tests.test_ui.test_browser import (
    ARTIFACTS,
    CHROMIUM_FLAGS,
    PAGE_TIMEOUT_MS,
    ensure_chromium,
)

# whichever test comes first waits for the session's demo (both venues, a whole day each)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(DEMO_TEST_TIMEOUT_S),
]

UI_LOAD_TIMEOUT_S = 240.0
#: the two analytics charts kept as screenshots: the README's headline and one more
CHART_ASSETS = (("analytics", "liquidity_heatmap"), ("analytics", "liquidity"))
DOCS_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
MAX_SCREENSHOT_BYTES = 300_000
#: a chart a person can read: at least this many pixels wide and high
READABLE_PX = (800, 400)
#: the marks of checks/grid.py: ✅ healthy, ❌ below the threshold, ⚠️ a check fails
OK, FAILING, WARNING, NOT_APPLICABLE = "✅", "❌", "⚠️", "➖"
#: settings a developer's shell may carry that a fresh clone's demo would not see
_FOREIGN_ENV = ("DAGSTER_HOME", "PETROSA_DAGSTER_POSTGRES_URL", "PETROSA_INGEST_GROUPS")


def screenshot_dir() -> Path:
    """docs/screenshots/ when asked to refresh the committed ones, else the test artifacts."""
    if os.environ.get("PETROSA_UPDATE_SCREENSHOTS") == "1":
        return DOCS_SCREENSHOTS
    return ARTIFACTS / "demo"


@dataclass
class Demo:
    """A finished demo's workdir, the settings it ran with and its webserver."""

    workdir: Path
    env: dict[str, str]
    day: str
    url: str
    output: str

    @property
    def partition(self) -> str:
        """The streamed day of the first instrument (Binance USD-M's BTCUSDT)."""
        return partition_key_str(self.day, INSTRUMENTS[0])

    @property
    def day_before(self) -> str:
        return (dt.date.fromisoformat(self.day) - dt.timedelta(days=1)).isoformat()

    def instance(self) -> dg.DagsterInstance:
        from dagster._core.instance.ref import InstanceRef

        return dg.DagsterInstance.from_ref(InstanceRef.from_dir(self.env["DAGSTER_HOME"]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(url: str, query: str) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


_LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


def _wait_for_location(url: str, web: subprocess.Popen, log: Path) -> None:
    """Until the code location is LOADED (the UI shows "Loading..." until then)."""
    deadline = time.monotonic() + UI_LOAD_TIMEOUT_S
    last: Any = None
    while time.monotonic() < deadline:
        if web.poll() is not None:
            pytest.fail(f"dagster-webserver exited {web.returncode}:\n{log.read_text()[-3000:]}")
        try:
            last = _graphql(url, _LOCATIONS)
            entries = last["data"]["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return
        except OSError as exc:
            last = exc
        time.sleep(1)
    pytest.fail(f"code location not loaded in {UI_LOAD_TIMEOUT_S:.0f} s: {last}")


@pytest.fixture(scope="module")
def demo(request):
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    reuse = os.environ.get("PETROSA_DEMO_WORKDIR")
    if reuse:  # a finished `petrosa demo --no-ui --days 2 --symbols BTCUSDT --workdir <dir>`
        workdir, output = Path(reuse), f"(reused the demo in {reuse})"
    else:  # the session's demo run (demo_run.py), which test_project/test_demo.py also reads
        done = request.getfixturevalue("finished_demo")
        workdir, output = done.workdir, done.stdout + done.stderr
        assert done.returncode == 0, f"petrosa demo exited {done.returncode}:\n{output[-4000:]}"
    # the settings the demo ran with (its exchange is gone: browsing needs none of it)
    demo_env = {
        "DAGSTER_HOME": str(workdir / "dagster_home"),
        "PETROSA_LAKE_PATH": str(workdir / "lake"),
        "PETROSA_LANDING_PATH": str(workdir / "landing"),
        "PETROSA_WEIGHT_BUDGET_DIR": str(workdir / "weight_budget"),
        "PETROSA_SYMBOLS": ",".join(INSTRUMENTS),
        "PETROSA_START_DATE": (workdir / "start_date").read_text().strip(),
    }
    # the demo's last closed day is the one it streams through the ingest (a fresh workdir's
    # start date is the first of the DAYS days)
    start = dt.date.fromisoformat(demo_env["PETROSA_START_DATE"])
    day = (start + dt.timedelta(days=DAYS - 1)).isoformat()
    url = f"http://127.0.0.1:{_free_port()}"
    log = workdir / "webserver.log"
    with log.open("w") as out:
        web = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-webserver"),
                "-h",
                "127.0.0.1",
                "-p",
                url.rsplit(":", 1)[1],
                "-w",
                str(REPO_ROOT / "workspace.yaml"),
            ],
            env={**env, **demo_env},
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_location(url, web, log)
        yield Demo(workdir, demo_env, day, url, output)
    finally:
        web.terminate()
        try:
            web.wait(timeout=30)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait()


@pytest.fixture(scope="module")
def page(demo):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install 'playwright>=1.65,<2' (dev extra)")
    executable = ensure_chromium()
    screenshot_dir().mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(executable), headless=True, args=CHROMIUM_FLAGS
        )
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        yield context.new_page()
        context.close()
        browser.close()


def _expect():
    from playwright.sync_api import expect

    # assertions wait as long as page loads may (context timeouts do not apply to them; their
    # own default, 5 s, failed on a loaded machine while the UI was still rendering)
    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    return expect


def visit(page, demo: Demo, path: str, name: str, ready: tuple[Any, ...] = ()) -> Any:
    """Open ``path`` on the demo's UI once its ``ready`` texts show and no spinner is left; the
    whole page is saved as ``artifacts/ui/demo/page_<name>.png`` (CI uploads it)."""
    expect = _expect()
    page.goto(demo.url + path, wait_until="load")
    page.get_by_role("link", name="Catalog").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    for text in ready:
        expect(page.get_by_text(text).first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
    expect(page.get_by_text(re.compile(r"^Loading\b"))).to_have_count(0, timeout=PAGE_TIMEOUT_MS)
    (ARTIFACTS / "demo").mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo" / f"page_{name}.png"), full_page=True)
    return page


def _partition_path(path: tuple[str, ...], partition: str) -> str:
    return f"/assets/{'/'.join(path)}?view=partitions&partition={partition.replace('|', '%7C')}"


def latest_materialization(demo: Demo, path: tuple[str, ...], partition: str):
    with demo.instance() as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey(list(path)), asset_partitions=[partition]), limit=1
        ).records
    assert records, f"{'/'.join(path)} has no materialisation of {partition}"
    return records[0].asset_materialization


def _row_count(mat) -> int:
    count = mat.metadata.get("dagster/row_count")
    assert count is not None, f"{mat.asset_key.to_user_string()}: no dagster/row_count"
    return int(count.value)


def _save(locator, name: str) -> Path:
    """Screenshot ``locator`` (an element: what the user sees of it) under ``name``.png."""
    target = screenshot_dir() / f"{name}.png"
    locator.screenshot(path=str(target))
    size = target.stat().st_size
    assert 0 < size < MAX_SCREENSHOT_BYTES, (target, size)
    return target


def test_the_depth_day_has_rows_in_the_ui(demo, page):
    path = ("market_data", "depth")
    rows = _row_count(latest_materialization(demo, path, demo.partition))
    assert rows > 0, f"the streamed depth day {demo.partition} is empty:\n{demo.output[-2000:]}"
    page = visit(page, demo, _partition_path(path, demo.partition), path[-1], (demo.partition,))
    # "." for "/": playwright's role selector cannot parse a "/" in a regex
    row = page.get_by_role("row", name=re.compile(r"dagster.row_count")).first
    _expect()(row).to_be_visible()
    shown = re.sub(r"[,\s]", "", row.inner_text())
    assert str(rows) in shown, (row.inner_text(), rows)


@pytest.mark.parametrize("path", CHART_ASSETS, ids=lambda p: p[-1])
def test_the_analytics_have_rows_and_a_readable_chart(demo, page, path):
    from petrosa_pipelines.analytics.charts import png_size

    mat = latest_materialization(demo, path, demo.partition)
    assert _row_count(mat) > 0, f"{'/'.join(path)} {demo.partition} has no rows"
    charts = {k: v for k, v in mat.metadata.items() if k.startswith("chart: ")}
    assert charts, f"{'/'.join(path)}: no `chart: ...` entry in {sorted(mat.metadata)}"
    key, chart = sorted(charts.items())[0]
    assert "data:image/png" in str(chart.value), f"{key} is not a PNG"
    width, height = png_size(chart)
    assert (width, height) >= READABLE_PX and height >= READABLE_PX[1], (key, width, height)
    summary = str(mat.metadata["summary"].value)
    assert SYMBOL in summary and demo.day in summary, summary

    expect = _expect()
    page = visit(page, demo, _partition_path(path, demo.partition), path[-1], (demo.partition, key))
    # the summary (title + key figures) is inline; the figure opens from its row
    expect(page.get_by_text(f"{SYMBOL} {demo.day}").first).to_be_visible()
    row = page.get_by_role("row", name=re.compile("^" + re.escape(key)))
    row.get_by_text("[Show Markdown]").click()
    img = page.locator("img[src^='data:image/png']").first
    expect(img).to_be_visible()
    natural = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert tuple(natural) == (width, height), natural
    _save(img, f"chart_{path[-1]}")
    page.keyboard.press("Escape")


def test_the_demo_raises_no_false_alarm(demo, monkeypatch):
    from petrosa_pipelines.checks.records import new_check_records
    from petrosa_pipelines.definitions import defs
    from sensors.alert_sensor import build_alert_sensor

    for name, value in demo.env.items():
        monkeypatch.setenv(name, value)
    for name in _FOREIGN_ENV[1:]:
        monkeypatch.delenv(name, raising=False)
    repo = defs.get_repository_def()
    keys = sorted(repo.asset_graph.asset_check_keys, key=str)
    with demo.instance() as instance:
        records = list(new_check_records(instance, keys, {}))
        failed = [f"{r.key_string} {r.partition}: {r.metadata}" for r in records if not r.passed]
        checked = {r.partition for r in records}
        # both days of both venues were checked, and nothing failed
        wanted = {partition_key_str(d, i) for d in (demo.day, demo.day_before) for i in INSTRUMENTS}
        assert wanted <= checked, checked
        assert not failed, "failed checks on clean demo data:\n" + "\n".join(failed)
        # the alert sensor as the daemon would run it an hour after the demo (the false
        # "ingest binance/demo is down" came five minutes after, then hourly)
        sensor = build_alert_sensor(clock=lambda: time.time() + 3_600)
        with dg.build_sensor_context(instance=instance, repository_def=repo) as context:
            result = sensor(context)
    assert isinstance(result, dg.SkipReason), result
    assert result.skip_message.startswith("no new check failures; ingest groups healthy"), (
        result.skip_message
    )


def test_the_health_grid_tells_healthy_from_broken(demo, page):
    path = ("checks", "health")
    # the batched health run puts the grid on its last partition: the materialisation the
    # asset's page shows as latest (checks/batch.py)
    with demo.instance() as instance:
        records = instance.fetch_materializations(dg.AssetKey(list(path)), limit=1).records
    assert records, "checks/health has no materialisation"
    latest, mat = records[0].partition_key, records[0].asset_materialization
    assert "health_grid" in mat.metadata, (latest, sorted(mat.metadata))
    assert "data:image/png" in str(mat.metadata["health_heatmap"].value)

    expect = _expect()
    page = visit(page, demo, _partition_path(path, latest), path[-1], (latest,))
    grid = page.get_by_role("row", name=re.compile(r"^health_grid")).first
    expect(grid).to_be_visible()
    # the grid's row for the demo day, rendered inline: one mark per dataset
    day_row = grid.get_by_role("row", name=re.compile(re.escape(demo.day))).first
    expect(day_row).to_be_visible()
    streamed = day_row.inner_text()
    assert streamed.count(OK) == 4 and FAILING not in streamed, streamed  # every dataset
    # the day before the ingest existed: trades and candles healthy, depth n/a, nothing red
    before = grid.get_by_role("row", name=re.compile(re.escape(demo.day_before))).first
    expect(before).to_be_visible()
    cells = before.get_by_role("cell")
    depth = cells.nth(2 + list(GRID_DATASETS).index("depth")).inner_text()
    assert depth.startswith(NOT_APPLICABLE), (depth, before.inner_text())
    text = grid.inner_text()
    assert FAILING not in text and WARNING not in text, text
    _save(grid, "health_grid")
