"""The static leaderboard: matrix, per-task pages, provenance, escaping, plots, determinism."""

from __future__ import annotations

import json
import re
import statistics
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pydantic import ValidationError

from cl_bench.cli import main
from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from cl_bench.report.leaderboard import build_site, colour, reproduce_command, slug
from cl_bench.specs import TaskSpec
from cl_bench.store import write_result
from tests.conftest import write_tree
from tests.record_helpers import make_record

HOSTILE = "<img src=x onerror=alert(1)>"

PAPER_METHOD = {
    "tasks/tiny-linear2.yaml": """
        id: tiny-linear2
        version: 1
        description: linear probe on plain digits, two metrics (test fixture)
        dataset: {name: digits}
        protocol: {name: linear_probe, params: {l2_grid: [0.0001, 0.01]}}
        primary_metric: top1
        metrics: [top1, top5]
    """,
    "baselines/paper-m.yaml": """
        id: paper-m
        description: a method with paper numbers (test fixture) <b>bold?</b>
        provides: [image_encoder]
        arch: {name: small-resnet, params: {width: 8}}
        paper:
          title: A paper
          reported:
            - {metric: top1, value: 70.0, setting: "ImageNet, R50", source: "arXiv 0000.00000, Table 1", task: tiny-knn}
            - {metric: top1, value: 60.0, setting: "CIFAR-10", source: "arXiv 0000.00000, Table 2"}
    """,
}


class Cells(HTMLParser):
    """Rows of the table with a given id: lists of (attrs, text) per cell."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.depth, self.rows, self.cell, self.in_body = table_id, 0, [], None, False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and (self.depth or a.get("id") == self.table_id):
            self.depth += 1
        if self.depth != 1:
            return
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append([])
        elif tag in ("td", "th") and self.in_body:
            self.cell = [a, ""]
            self.rows[-1].append(self.cell)

    def handle_endtag(self, tag):
        if tag == "table" and self.depth:
            self.depth -= 1
        if tag in ("td", "th"):
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None and self.depth == 1:
            self.cell[1] += data


def table_rows(html: str, table_id: str) -> list[list[tuple[dict, str]]]:
    p = Cells(table_id)
    p.feed(html)
    return [[(a, " ".join(t.split())) for a, t in row] for row in p.rows]


@pytest.fixture
def board_results(tiny_root: Path, tmp_path: Path) -> Path:
    write_tree(tiny_root, PAPER_METHOD)
    reg = Registry()
    knn, lin = reg.task("tiny-knn"), reg.task("tiny-linear2")
    res = tmp_path / "results"
    for seed, v in enumerate([71.0, 73.0, 75.5]):
        write_result(res, make_record(knn, "paper-m", seed, v))
        write_result(res, make_record(lin, "paper-m", seed, v + 10, extras={
            "num_classes": 10, "n_test": 540,
            "curves": {"acc vs shots": {"x": [1, 5], "y": [v / 2, v], "x_label": "shots"}},
            "per_group": {"per pattern": {"colour": v, "count": v - 3}}}))
    write_result(res, make_record(knn, "chance-m", 0, 11.0))  # 10 classes: within noise of chance
    write_result(res, make_record(knn, "hostile-ckpt", 0, 40.0, checkpoint={"path": HOSTILE}))
    write_result(res, make_record(lin, "broken-ckpt", 0, 80.0, checkpoint={
        "path": "/ckpt/x.pt", "missing": ["layer1.0.conv1.weight", "bn1.num_batches_tracked"], "dropped": []}))
    write_result(res, make_record(knn, "old-m", 0, 99.0, spec_hash="0" * 64))  # stale
    return res


def test_matrix_rows_values_and_flags(board_results: Path, tmp_path: Path) -> None:
    out = build_site(board_results, Registry(), tmp_path / "site")
    html = (out / "index.html").read_text()
    rows = table_rows(html, "family-vision-table")  # knn and linear probe: both vision tasks
    by_method = {r[0][1]: r for r in rows}
    assert sorted(by_method) == sorted(["paper-m", "hostile-ckpt", "chance-m", "broken-ckpt", "old-m"])
    # columns: method, tiny-knn, tiny-linear2 (sorted task ids), the family average (top-1 tasks)
    vals = [71.0, 73.0, 75.5]
    expect = f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f} n=3"
    assert by_method["paper-m"][1][1] == expect + " paper 70.00 settings differ"  # the paper's number, greyed
    assert float(by_method["paper-m"][1][0]["data-sort"]) == pytest.approx(statistics.mean(vals))
    assert by_method["chance-m"][1][1] == "11.00 n=1 suspect"
    assert by_method["broken-ckpt"][2][1] == "80.00 n=1 suspect"
    assert by_method["old-m"][1][1] == "stale" and by_method["old-m"][2][1] == "—"
    # only paper-m has both tasks: its average is the mean of its two task means, and it is listed first
    assert rows[0][0][1] == "paper-m"
    assert by_method["paper-m"][3][1] == f"{(statistics.mean(vals) + statistics.mean(vals) + 10) / 2:.2f}"
    assert {by_method[m][3][1] for m in by_method if m != "paper-m"} == {"—"}
    # provenance + reproduce line in the cell's tooltip
    title = by_method["paper-m"][1][0]["title"]
    assert "task v1" in title and "code 0.1.0 (0123456789ab)" in title and "2026-01-02T03:04:05Z" in title
    assert "reproduce: clbench run --method paper-m --task tiny-knn --seed 0 --seeds 3" in title
    assert "cpu:test:1threads" in title and "00abababababab"[:12] in title
    assert "1 backbone key(s) missing (e.g. layer1.0.conv1.weight)" in html  # BN counter is tolerated
    assert "old-m</b> / tiny-knn: measured under task v1 spec 0000000000" in html


def test_hostile_names_are_escaped_and_nothing_loads_from_the_network(board_results: Path, tmp_path: Path) -> None:
    out = build_site(board_results, Registry(), tmp_path / "site")
    for page in out.glob("*.html"):
        html = page.read_text()
        assert "<img src=x" not in html and "<b>bold?" not in html
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), page
        assert len(re.findall(r"<script", html)) == 1  # only the inline sorter
    task_page = (out / f"task-{slug('tiny-knn')}.html").read_text()
    assert "--checkpoint &#39;&lt;img src=x onerror=alert(1)&gt;&#39;" in task_page  # shell-quoted, then escaped
    # a hostile method name never reaches the page: the store refuses it, written or planted
    with pytest.raises(ValidationError, match="should match pattern"):
        make_record(Registry().task("tiny-knn"), HOSTILE, 0, 40.0)
    planted = board_results / "x" / "tiny-knn" / "seed0.json"
    planted.parent.mkdir(parents=True)
    record = json.loads((board_results / "paper-m" / "tiny-knn" / "seed0.json").read_text())
    planted.write_text(json.dumps({**record, "method": HOSTILE}))
    with pytest.raises(ClBenchError, match="field 'method': String should match pattern"):
        build_site(board_results, Registry(), tmp_path / "site2")


def test_reported_vs_reproduced(board_results: Path, tmp_path: Path) -> None:
    out = build_site(board_results, Registry(), tmp_path / "site")
    rows = table_rows((out / "index.html").read_text(), "reported-table")
    assert len(rows) == 2
    first, second = ([t for _, t in r] for r in rows)
    ours = statistics.mean([71.0, 73.0, 75.5])
    assert first[:3] == ["paper-m", "top1", "70.00"]
    assert first[3] == f"{ours:.2f} ± {statistics.stdev([71.0, 73.0, 75.5]):.2f} n=3"
    assert first[4] == "settings differ"  # no delta across settings: the paper number is greyed context
    assert first[5:] == ["tiny-knn", "ImageNet, R50", "arXiv 0000.00000, Table 1"]
    assert second[3] == "—" and second[5] == "no matching task"


def test_task_page_metrics_provenance_and_plots(board_results: Path, tmp_path: Path) -> None:
    out = build_site(board_results, Registry(), tmp_path / "site")
    page = (out / "task-tiny-linear2.html").read_text()
    rows = {r[0][1].split(" ")[0]: r for r in table_rows(page, "task-table")}
    v = [81.0, 83.0, 85.5]
    assert rows["paper-m"][1][1] == f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}"  # top1
    assert rows["paper-m"][2][1] == f"{statistics.mean([x + 5 for x in v]):.2f} ± {statistics.stdev(v):.2f}"
    assert rows["paper-m"][3][1] == "0, 1, 2"
    assert "clbench run --method broken-ckpt --task tiny-linear2 --seed 0 --checkpoint /ckpt/x.pt" in page
    svgs = sorted(p.name for p in (out / "plots").glob("*.svg"))
    assert svgs == sorted([
        "tiny-knn-top1.svg", "tiny-linear2-top1.svg",
        f"tiny-linear2-curve-{slug('acc vs shots')}.svg", f"tiny-linear2-groups-{slug('per pattern')}.svg"])
    for s in svgs:
        text = (out / "plots" / s).read_text()
        assert text.lstrip().startswith("<?xml") and "<svg" in text and "<script" not in text
        assert f'src="plots/{s}"' in (out / f"task-{s.split('-top1')[0].split('-curve')[0].split('-groups')[0]}.html").read_text()


def test_site_is_deterministic_and_rebuild_replaces_it(board_results: Path, tmp_path: Path) -> None:
    a = build_site(board_results, Registry(), tmp_path / "a")
    b = build_site(board_results, Registry(), tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    (a / "task-gone.html").write_text("old page")
    build_site(board_results, Registry(), a)
    assert not (a / "task-gone.html").exists()
    other = tmp_path / "not-a-site"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    with pytest.raises(ClBenchError, match="not a leaderboard folder"):
        build_site(board_results, Registry(), other)
    assert (other / "precious.txt").read_text() == "keep"


def test_leaderboard_cli(board_results: Path, tmp_path: Path, capsys) -> None:
    assert main(["leaderboard", "--results-dir", str(board_results), "--out", str(tmp_path / "lb"),
                 "--tasks", "tiny-knn"]) == 0
    assert "index.html" in capsys.readouterr().out
    assert not (tmp_path / "lb" / "task-tiny-linear2.html").exists()
    assert (tmp_path / "lb" / "task-tiny-knn.html").exists()


def test_helpers_by_hand() -> None:
    assert colour(5.0, 0.0, 10.0, True) == "hsl(60, 65%, 82%)"
    assert colour(10.0, 0.0, 10.0, True) == "hsl(120, 65%, 82%)"
    assert colour(10.0, 0.0, 10.0, False) == "hsl(0, 65%, 82%)"
    assert colour(3.0, 3.0, 3.0, True) == "hsl(60, 65%, 82%)"
    assert slug("digits-knn") == "digits-knn"
    assert re.fullmatch(r"_img_src_x_onerror_alert_1__-[0-9a-f]{8}", slug(HOSTILE))
    task = TaskSpec.model_validate({"id": "t", "version": 1, "description": "d", "dataset": {"name": "digits"},
                                    "protocol": {"name": "knn"}, "primary_metric": "top1"})
    rec = make_record(task, "m", 2, 50.0)
    assert reproduce_command(rec, [2]) == "clbench run --method m --task t --seed 2"
    assert reproduce_command(rec, [0, 1, 2]) == "clbench run --method m --task t --seed 0 --seeds 3"
    assert reproduce_command(rec, [0, 2]).endswith("--seed 0   # and likewise for seeds 2")
