"""The HTML audit report in a real headless browser (Debian's chromium, driven by
Playwright): it loads without errors, the charts render, the search filters the rows of
blocked exchanges. A screenshot is kept in test-artifacts/."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.integration.test_audit_review_cli import written_log
from tests.unit.test_audit_report import LOG

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# what the toxicity detector gave each exchange's new messages: the executor's scores climb
SCORED = [{"exchange": f"s{i}", "direction": "request", "agent": agent, "action": "allow", "messages": 1, "rules": [],
           "detectors": [{"detector": "toxicity", "texts": 1, "skipped": 0, "ms": 0.1, "top": top}],
           "ts": f"2026-11-28T10:0{i}:30Z"}
          for i, (agent, top) in enumerate([("executor", 0.02), ("planner", 0.03), ("executor", 0.4),
                                            ("planner", 0.02), ("executor", 0.9)])]
DRIFT = {"exchange": "e5", "event": "drift", "agent": "executor", "metric": "toxicity", "method": "cusum",
         "value": 0.9, "baseline": {"mean": 0.05, "std": 0.2}, "statistic": 7.2, "threshold": 5.0,
         "ts": "2026-11-28T10:05:00Z"}


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("no chromium on PATH: .ci/run installs Debian's chromium (apt-get install chromium)")
    return found


def test_the_report_loads_renders_its_charts_and_filters_blocked_exchanges(tmp_path: Path):
    log = written_log(tmp_path / "audit.jsonl", [*LOG, *SCORED, DRIFT])
    page_path = tmp_path / "report.html"
    done = subprocess.run([sys.executable, "-m", "firewall.cli", "audit", "report", str(log), "-o", str(page_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    html = page_path.read_text()
    assert "<script src" not in html and "http://" not in html and "https://" not in html  # self-contained

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 1400})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.goto(page_path.as_uri())
            assert page.title() == "agent-firewall audit report: audit.jsonl"
            # the charts render: bars per agent and per rule, agents and edges in the graph
            assert page.locator("#timeline-chart rect.bar").count() >= 4
            assert page.locator("#timeline-chart rect.blocked").count() == 2
            assert page.locator("#rules-chart rect.bar").count() == 2
            assert page.locator("#lineage-graph circle.agent").count() == 3
            assert page.locator("#lineage-graph line.edge").count() == 2
            assert page.locator("#drift-table tbody tr").count() == 1
            assert page.locator("svg.curves polyline.curve").count() == 2  # toxicity: executor, planner
            box = page.locator("#timeline-chart").bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 50
            # the search filters the blocked exchanges
            rows = page.locator("#blocked-table tbody tr")
            assert rows.count() == 2
            page.fill("#search", "carries-flagged")
            assert [rows.nth(i).is_visible() for i in range(2)] == [True, False]
            assert page.inner_text("#shown") == "1"
            page.fill("#search", "")
            assert page.inner_text("#shown") == "2"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "audit-report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert (ARTIFACTS / "audit-report.png").stat().st_size > 10_000
