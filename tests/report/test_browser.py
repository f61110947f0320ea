"""The leaderboard in a real headless browser (Debian's chromium driven by Playwright).

Loads with no console errors, the vision family table has the expected rows, a click on a column header
sorts it, a hostile checkpoint path shows as text and runs nothing (hostile method names never
reach the page: the store refuses them). A screenshot goes to
``$CLBENCH_ARTIFACTS`` (default: the test's tmp dir).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cl_bench.registry import Registry
from cl_bench.report.leaderboard import build_site
from cl_bench.store import write_result
from tests.record_helpers import make_record
from tests.report.test_leaderboard import HOSTILE, board_results  # noqa: F401 - fixture

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_leaderboard_in_chromium(board_results: Path, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    reg = Registry()
    knn = reg.task("tiny-knn")
    for method, value in [("zeta", 55.0), ("alpha", 65.0)]:
        write_result(board_results, make_record(knn, method, 0, value))
    site = build_site(board_results, reg, tmp_path / "site")
    artifacts = Path(os.environ.get("CLBENCH_ARTIFACTS") or tmp_path / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            problems: list[str] = []
            dialogs: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("request", lambda r: problems.append("network: " + r.url)
                    if not r.url.startswith(("file://", "data:")) else None)

            page.goto((site / "index.html").as_uri())
            page.wait_for_load_state("load")
            names = page.locator("#family-vision-table tbody td.method").all_inner_texts()
            expected = sorted(["paper-m", "hostile-ckpt", "chance-m", "broken-ckpt", "old-m", "zeta", "alpha"])
            assert sorted(names) == expected
            assert page.locator("#family-vision-table img").count() == 0

            header = page.locator("#family-vision-table thead th", has_text="tiny-knn")
            header.click()
            assert header.get_attribute("aria-sort") == "descending"
            order = page.locator("#family-vision-table tbody td.method").all_inner_texts()
            # tiny-knn means: paper-m 73.17, alpha 65, zeta 55, hostile 40, chance-m 11; then empties
            assert order[:5] == ["paper-m", "alpha", "zeta", "hostile-ckpt", "chance-m"]
            assert sorted(order[5:]) == ["broken-ckpt", "old-m"]
            header.click()
            assert header.get_attribute("aria-sort") == "ascending"
            order = page.locator("#family-vision-table tbody td.method").all_inner_texts()
            assert order[:5] == ["chance-m", "hostile-ckpt", "zeta", "alpha", "paper-m"]
            page.locator("#family-vision-table thead th", has_text="method").click()
            assert page.locator("#family-vision-table tbody td.method").all_inner_texts() == sorted(expected, reverse=True)
            # one table per family present (both tasks are vision), linked from the top; the family average
            # (paper-m alone has both tasks) sorts; paper-m's other-setting paper number sits greyed beside its cell
            assert page.locator("table.family").count() == 1
            page.locator("a[href='#family-vision']").click()
            assert page.url.endswith("#family-vision")
            page.locator("#family-vision-table thead th.average").click()
            assert page.locator("#family-vision-table tbody td.method").first.inner_text() == "paper-m"
            row = page.locator("#family-vision-table tbody tr[data-method='paper-m']")
            assert row.locator("td.average").inner_text() == "78.17"  # (73.17 + 83.17) / 2
            paper = row.locator("td").nth(1).locator(".paper")
            assert paper.inner_text() == "paper 70.00 settings differ" and "muted" in paper.get_attribute("class")

            shot = artifacts / "leaderboard.png"
            page.screenshot(path=str(shot), full_page=True)
            page.goto((site / "task-tiny-knn.html").as_uri())
            page.wait_for_load_state("load")
            assert page.locator("#task-table > tbody > tr").count() == 5
            assert "&lt;img src=x onerror=alert(1)&gt;" in page.content()  # serialised back as text
            assert page.locator("#task-table img").count() == 0  # the checkpoint path is text, not an element
            page.locator("#task-table > tbody > tr", has_text="paper-m").locator("summary").click()
            assert page.locator("#task-table > tbody > tr", has_text="paper-m").locator("details table").is_visible()
            page.screenshot(path=str(artifacts / "leaderboard-task.png"), full_page=True)
            assert problems == [] and dialogs == []
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


@pytest.fixture(autouse=True)
def _need_chromium() -> None:
    assert Path(CHROMIUM).exists(), "install Debian's chromium (apt-get install -y chromium); see .ci/run"


def test_claims_page_in_chromium(tiny_root: Path, tmp_path: Path) -> None:
    """The claims page: one row per claim link, verdict flags, a hostile claim source shown as text,
    sorting by p, no console errors or network."""
    from playwright.sync_api import sync_playwright

    from tests.test_claims import CLAIMS_TREE, _record
    from tests.conftest import write_tree

    tree = dict(CLAIMS_TREE)
    tree["baselines/claimer.yaml"] = tree["baselines/claimer.yaml"].replace('source: "Table 1"', f'source: "{HOSTILE}"')
    write_tree(tiny_root, tree)
    reg = Registry()
    knn = reg.task("tiny-knn")
    res = tmp_path / "results"
    for method, values in {"good": [80.0, 82.0, 81.0], "bad": [60.0, 61.0, 59.5], "mid": [70.0, 71.5, 69.0]}.items():
        for seed, v in enumerate(values):
            write_result(res, _record(knn, method, seed, {"top1": v, "top5": v - 5.0}))
    site = build_site(res, reg, tmp_path / "site")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: problems.append("network: " + r.url)
                    if not r.url.startswith(("file://", "data:")) else None)
            page.goto((site / "index.html").as_uri())
            page.locator("nav a", has_text="Claims").click()
            page.wait_for_load_state("load")
            rows = page.locator('#claims-table > tbody > tr[data-method="claimer"]')
            assert rows.count() == 13  # 11 claims, two of them chains of 2 links (the project's own follow)
            first = rows.nth(0)
            assert "good > bad on tiny-knn" in first.inner_text() and "holds" in first.inner_text()
            assert HOSTILE in first.inner_text() and page.locator("#claims-table img").count() == 0
            assert page.locator("#claims-table .flag.does-not-hold", has_text="contradicted").count() == 2  # bad > good; mid > good (a chain link)
            header = page.locator("#claims-table thead th", has_text="p")
            header.last.click()  # the p column (descending: the largest p first, "—" last)
            texts = page.locator("#claims-table > tbody > tr > td:nth-child(9)").all_inner_texts()
            numbers = [float(t) for t in texts if t.strip()]
            assert numbers == sorted(numbers, reverse=True) and texts[-1].strip() == ""
            page.screenshot(path=str(tmp_path / "claims.png"), full_page=True)
            assert problems == []
        finally:
            browser.close()
