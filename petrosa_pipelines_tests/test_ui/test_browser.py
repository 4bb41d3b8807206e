"""The Dagster UI of the running stack, in Debian's Chromium driven by playwright.

A data engineer's day in the UI: the lineage of the four datasets, a partition of a partitioned
asset with its check results, a backfill's run, and the analytics charts. Each page is asserted
on what the user must see and saved as a screenshot under ``artifacts/ui/`` (git-ignored; CI
uploads it). Chromium is installed with apt when missing and the test runs as root; otherwise
the test fails with the command to run, never skips.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from petrosa_pipelines_tests.test_stack.harness import (
    KEYS,
    MARKET_DATA,
    MARKET_DATA_PATHS,
    REPO,
    SHARED,
    STACK_TEST_TIMEOUT_S,
    Backfilled,
    asset_nodes_by_path,
    checks_of,
    repository,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # the shared backfill is paid by whichever test asks for it first
    pytest.mark.timeout(STACK_TEST_TIMEOUT_S),
]

CHROMIUM = Path(os.environ.get("PETROSA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("PETROSA_ARTIFACTS_DIR", REPO / "artifacts")) / "ui"
#: a deadline per page element, not a speed: generous enough for a loaded 2-core machine running
#: the suite on several workers (the UI was seen "Loading partitions..." for tens of seconds)
PAGE_TIMEOUT_MS = 120_000
PARTITION = KEYS[0]
ANALYTICS_TIMEOUT = 240.0


def ensure_chromium() -> Path:
    """Debian's Chromium, installed with apt-get when missing and allowed (root + apt)."""
    if CHROMIUM.exists():
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [apt, "install", "-y", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run([apt, "update"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=900)
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing at {CHROMIUM} and could not be installed here: run "
            "`sudo apt-get install -y chromium` (or set PETROSA_CHROMIUM to a Chromium binary)"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install 'playwright>=1.65,<2' (dev extra)")
    executable = ensure_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(executable), headless=True, args=CHROMIUM_FLAGS
        )
        yield chromium
        chromium.close()


@dataclass
class UI:
    """One browser page on the stack's webserver, plus what the stack holds."""

    page: Any
    stack: Any
    base_url: str
    backfilled: Backfilled
    nodes: dict[tuple[str, ...], dict[str, Any]]

    def visit(self, path: str, screenshot: str, ready: tuple[Any, ...] = ()) -> Any:
        """Open ``path``, wait for ``ready`` texts and for every spinner, save a screenshot.

        Dagster renders the shell first, then "Loading <location>...", then each panel with its
        own "Loading..." row: a screenshot is only worth keeping once all of them are gone.
        """
        page = self.page
        expect = _expect()
        page.goto(self.base_url + path, wait_until="load")
        page.get_by_role("link", name="Catalog").first.wait_for(timeout=PAGE_TIMEOUT_MS)
        for text in ready:
            expect(page.get_by_text(text).first).to_be_visible(timeout=PAGE_TIMEOUT_MS)
        spinners = page.get_by_text(re.compile(r"^Loading\b"))
        expect(spinners).to_have_count(0, timeout=PAGE_TIMEOUT_MS)
        # "Join the Dagster community" shows on an instance without `nux: enabled: false`
        skip = page.get_by_role("button", name="Skip")
        if skip.count() and skip.first.is_visible():
            skip.first.click()
        page.screenshot(path=str(ARTIFACTS / f"{screenshot}.png"), full_page=True)
        return page


@pytest.fixture(scope="module")
def ui(ui_stack, browser):
    backfilled = SHARED.backfilled()
    assert backfilled.progress.status == "COMPLETED_SUCCESS", backfilled.explain()
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    nodes = asset_nodes_by_path(repository(ui_stack))
    yield UI(page, ui_stack, ui_stack.webserver_url, backfilled, nodes)
    context.close()


def _expect():
    from playwright.sync_api import expect

    # assertions wait as long as page loads may (context timeouts do not apply to them; their
    # own default, 5 s, failed on a loaded machine while the UI was still rendering)
    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    return expect


def test_lineage_shows_the_four_datasets(ui):
    partitions = re.compile(r"^\d[\d,]* partitions$")
    # the graph renders only the nodes inside the viewport: make it tall enough for all four
    ui.page.set_viewport_size({"width": 1600, "height": 2600})
    try:
        page = ui.visit(
            "/locations/petrosa_pipelines/asset-groups/market_data/lineage",
            "lineage",
            ready=("Latest event", partitions),
        )
        expect = _expect()
        for name in MARKET_DATA:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        # every node has its status rows filled in: the partition count and a recent event
        assert page.get_by_text(partitions).count() >= len(MARKET_DATA)
        assert page.get_by_text(re.compile(r"ago$")).count() >= len(MARKET_DATA)
        if any(checks_of(ui.nodes[p]) for p in MARKET_DATA_PATHS):
            # the node's check row summarises the latest results, e.g. "7 / 7 Passed"
            summaries = page.get_by_text(re.compile(r"^\d+ / \d+ Passed$"))
            assert summaries.count() >= len(MARKET_DATA)
    finally:
        ui.page.set_viewport_size({"width": 1600, "height": 1000})
    analytics = [p for p, n in ui.nodes.items() if n["groupName"] == "analytics"]
    if analytics:
        page = ui.visit("/asset-groups", "lineage_global", ready=("Global asset lineage",))
        expect(page.get_by_text("analytics").first).to_be_visible()


def test_partition_view_shows_the_partition_and_its_checks(ui):
    expect = _expect()
    for path in MARKET_DATA_PATHS:
        name = path[-1]
        query = f"?view=partitions&partition={PARTITION.replace('|', '%7C')}"
        page = ui.visit(
            f"/assets/{'/'.join(path)}{query}",
            f"partition_{name}",
            ready=(PARTITION, "dagster/row_count"),
        )
        expect(page.get_by_text(PARTITION, exact=True).first).to_be_visible()
        expect(page.get_by_text("Materialized", exact=True).first).to_be_visible()
        checks = checks_of(ui.nodes[path])
        if not checks:
            continue
        partitioned = [c for c in checks if c["partitionDefinition"] is not None]
        shown = (partitioned or checks)[0]["name"]
        page = ui.visit(
            f"/assets/{'/'.join(path)}?view=checks&checkDetail={shown}",
            f"checks_{name}",
            ready=("Latest execution",),
        )
        for check in checks:
            expect(page.get_by_text(check["name"], exact=True).first).to_be_visible()
        # every check in the list shows the outcome of its latest run
        outcomes = page.get_by_text(re.compile(r"^(Succeeded|Failed|Warning)$"))
        assert outcomes.count() >= len(checks), (name, outcomes.count(), len(checks))
        if not partitioned:
            continue
        # the check's own partition view: one result per backfilled symbol-day
        page.get_by_role("tab", name="Partitions").last.click()
        passed = page.get_by_text(re.compile(r"^Passed \(\d+\)$")).first
        expect(passed).to_be_visible()
        failed = page.get_by_text(re.compile(r"^Failed \(\d+\)$")).first.inner_text()
        evaluated = _count(passed.inner_text()) + _count(failed)
        assert evaluated >= len(KEYS), (name, shown, passed.inner_text(), failed)
        page.screenshot(path=str(ARTIFACTS / f"check_partitions_{name}.png"), full_page=True)


def _count(label: str) -> int:
    return int(re.search(r"\((\d+)\)", label).group(1))


def test_a_backfill_run_shows_its_steps_succeeded(ui):
    expect = _expect()
    page = ui.visit(
        f"/runs/b/{ui.backfilled.backfill_id}", "backfill", ready=("Partition selection",)
    )
    expect(page.get_by_text("Succeeded").first).to_be_visible()
    with _instance(ui) as instance:
        runs = instance.get_runs(
            dg.RunsFilter(tags={"dagster/backfill": ui.backfilled.backfill_id})
        )
    run = runs[0]
    page = ui.visit(f"/runs/{run.run_id}", "run", ready=("STEP_SUCCESS",))
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    partition = run.tags.get("dagster/partition", "")
    expect(page.get_by_text(f"partition: {partition}").first).to_be_visible()
    for name in MARKET_DATA:
        assert page.get_by_text(f"market_data__{name}").count() >= 1, name
    expect(page.get_by_text("STEP_SUCCESS").first).to_be_visible()


def test_health_and_analytics_charts_are_visible(ui):
    expect = _expect()
    page = ui.visit("/assets/market_data/candles", "asset_candles", ready=("Row count",))
    expect(page.get_by_text("Latest materialization").first).to_be_visible()
    health = [
        (p, c["name"]) for p, n in ui.nodes.items() for c in checks_of(n) if c["name"] == "health"
    ]
    if health:
        path, check = sorted(health)[0]
        page = ui.visit(
            f"/assets/{'/'.join(path)}?view=checks&checkDetail={check}",
            "health",
            ready=("Latest execution",),
        )
        # the health score, its components (freshness is not applicable to the closed days the
        # backfill built, so it is left out of their score) and the verdict, as metadata
        for key in ("score", "completeness", "validity", "consistency", "status"):
            expect(page.get_by_text(key, exact=True).first).to_be_visible()
    assert any(n["groupName"] == "analytics" for n in ui.nodes.values()), (
        "no analytics assets in the code location: a wiring regression"
    )
    # analytics follow the backfill on the automation sensor's cadence
    deadline = time.monotonic() + ANALYTICS_TIMEOUT
    while (charted := _asset_with_chart(ui)) is None and time.monotonic() < deadline:
        time.sleep(5)
    assert charted is not None, "analytics assets exist but none has a chart yet"
    path, partition = charted
    query = f"?view=partitions&partition={partition.replace('|', '%7C')}"
    page = ui.visit(
        f"/assets/{'/'.join(path)}{query}", f"asset_{path[-1]}", ready=(partition, "chart")
    )
    # markdown metadata opens in a dialog: the chart is a PNG inside it
    page.get_by_role("row", name=re.compile(r"^chart")).get_by_text("[Show Markdown]").click()
    chart = page.locator("img[src^='data:image/png']")
    expect(chart.first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / f"chart_{path[-1]}.png"))


def _asset_with_chart(ui) -> tuple[tuple[str, ...], str] | None:
    """An analytics asset and partition whose materialisation carries a PNG chart."""
    with _instance(ui) as instance:
        for path, node in sorted(ui.nodes.items()):
            if node["groupName"] != "analytics":
                continue
            for record in instance.fetch_materializations(
                dg.AssetKey(list(path)), limit=20
            ).records:
                mat = record.asset_materialization
                if mat is None:
                    continue
                for value in mat.metadata.values():
                    if isinstance(value, dg.MarkdownMetadataValue) and "data:image/png" in (
                        value.md_str or ""
                    ):
                        return path, str(mat.partition or "")
    return None


def _instance(ui):
    return ui.stack.instance()
