"""The leaderboard overview by task family: grouping from the protocol, the paper's number beside
a cell, the family average worked by hand."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from cl_bench import components
from cl_bench.registry import Registry
from cl_bench.report.families import FAMILIES, family_average, family_of, protocol_family
from cl_bench.report.leaderboard import build_site
from cl_bench.specs import ResultRecord, TaskSpec
from cl_bench.store import write_result
from tests.conftest import write_tree
from tests.record_helpers import make_record
from tests.report.test_leaderboard import table_rows

FAMILY_TREE = {
    "tasks/tiny-linear2.yaml": """
        id: tiny-linear2
        version: 1
        description: linear probe on plain digits (test fixture)
        dataset: {name: digits}
        protocol: {name: linear_probe, params: {l2_grid: [0.0001, 0.01]}}
        primary_metric: top1
    """,
    "tasks/tiny-separation.yaml": """
        id: tiny-separation
        version: 1
        description: a vision task whose primary metric is not top-1 (test fixture)
        dataset: {name: digits-salient}
        protocol: {name: salient_separation}
        primary_metric: separation
    """,
    "tasks/tiny-det.yaml": """
        id: tiny-det
        version: 1
        description: detection on generated scenes (test fixture)
        dataset: {name: scenes-voc}
        protocol: {name: detection}
        primary_metric: AP
    """,
    "tasks/tiny-zeroshot.yaml": """
        id: tiny-zeroshot
        version: 1
        description: zero-shot on generated scenes (test fixture)
        dataset: {name: scenes-captions}
        protocol: {name: zero_shot}
        primary_metric: top1
    """,
    "tasks/tiny-knn-paper.yaml": """
        id: tiny-knn-paper
        version: 1
        description: kNN in the paper's setting (test fixture)
        dataset: {name: digits}
        protocol: {name: knn, params: {k: 5}}
        primary_metric: top1
        metrics: [top1, top5]
        setting:
          protocol: "kNN k=5"
          data: "digits train -> test"
          architecture: [{name: small-resnet}]
    """,
    "baselines/claimer.yaml": """
        id: claimer
        description: a method with a same-setting paper number (test fixture)
        provides: [image_encoder]
        arch: {name: small-resnet, params: {width: 8}}
        paper:
          title: A paper
          reported:
            - {metric: top1, value: 70.0, setting: "digits, kNN k=5", source: "Table 1", task: tiny-knn-paper,
               same_setting: true, protocol: "kNN k=5", data: "digits train -> test"}
            - {metric: top1, value: 60.0, setting: "digits, another backbone", source: "Table 2", task: tiny-knn-paper}
            - {metric: top5, value: 99.0, setting: "digits, kNN k=5", source: "Table 1", task: tiny-knn-paper,
               same_setting: true, protocol: "kNN k=5", data: "digits train -> test"}
    """,
}


def _record(task: TaskSpec, method: str, seed: int, value: float) -> ResultRecord:
    """A record of ``task`` whose primary metric is ``value`` (top1 and top5 when it is top1)."""
    if task.primary_metric == "top1":
        return make_record(task, method, seed, value)
    rec = make_record(task.model_copy(update={"primary_metric": "top1"}), method, seed, value,
                      spec_hash=task.spec_hash())
    return ResultRecord.model_validate({**rec.model_dump(), "primary_metric": task.primary_metric,
                                        "metrics": {task.primary_metric: value}})


VALUES = {  # method -> task -> one value per seed
    "a": {"tiny-knn": [80.0, 82.0], "tiny-linear2": [90.0]},
    "b": {"tiny-knn": [70.0], "tiny-linear2": [60.0, 64.0, 68.0], "tiny-separation": [30.0]},
    "c": {"tiny-knn": [75.0]},
    "d": {"tiny-separation": [40.0], "tiny-det": [12.0, 14.0]},
    "e": {"tiny-zeroshot": [50.0]},
    "claimer": {"tiny-knn-paper": [71.0, 73.0, 75.5]},
}


def _write(res: Path, values: dict[str, dict[str, list[float]]]) -> Path:
    reg = Registry()
    for method, per_task in values.items():
        for task_id, vals in per_task.items():
            for seed, v in enumerate(vals):
                write_result(res, _record(reg.task(task_id), method, seed, v))
    return res


@pytest.fixture
def family_results(tiny_root: Path, tmp_path: Path) -> Path:
    write_tree(tiny_root, FAMILY_TREE)
    return _write(tmp_path / "results", VALUES)


def test_family_follows_the_protocol() -> None:
    # every registered protocol lands in one of the named families, none in a fallback
    keys = {name: protocol_family(name).key for name in components.names("protocol")}
    assert set(keys.values()) <= {f.key for f in FAMILIES}
    # the project's tasks, grouped by hand from what each one measures
    reg = Registry()
    by_hand = {
        "digits-knn": "vision", "digits-linear": "vision", "digits-fewshot": "vision",
        "digits-hard-linear-sgd": "vision", "digits-salient-separation": "vision",
        "scenes-voc-det": "dense", "scenes-seg-frozen": "dense", "coco-det-fpn-1x": "dense",
        "scenes-retrieval": "image-text", "scenes-zeroshot": "image-text", "scenes-mmvp": "image-text",
        "mmeb": "image-text", "sts-synthetic": "text", "tatoeba-bitext": "text", "paraphrase-mining": "text",
        "truthfulqa-mc1": "language", "truthfulqa-mc2": "language",
        "icl-fewshot-sst2": "icl", "icl-linreg": "icl", "icll-dfa": "icl",
    }
    assert {t: protocol_family(reg.task(t).protocol.name).key for t in by_hand} == by_hand
    # a capability no family knows is its own family, without an average
    other = family_of("audio_encoder", "clips")
    assert other.key == "other-audio_encoder" and not other.averaged


def test_one_table_per_family_with_only_its_methods(family_results: Path, tmp_path: Path) -> None:
    site = build_site(family_results, Registry(), tmp_path / "site")
    html = (site / "index.html").read_text()
    assert 'id="matrix-table"' not in html
    order = [f.key for f in FAMILIES]
    found = [k for k in order if f'id="family-{k}-table"' in html]
    assert found == ["vision", "dense", "image-text"]  # FAMILIES order; no table for a family without results
    assert [html.index(f'id="family-{k}-table"') for k in found] == sorted(html.index(f'id="family-{k}-table"')
                                                                          for k in found)
    methods = {k: sorted(r[0][1] for r in table_rows(html, f"family-{k}-table")) for k in found}
    assert methods == {"vision": ["a", "b", "c", "claimer", "d"], "dense": ["d"], "image-text": ["e"]}
    dense = table_rows(html, "family-dense-table")
    assert dense[0][1][1] == f"13.00 ± {statistics.stdev([12.0, 14.0]):.2f} n=2"
    assert len(dense[0]) == 2  # method + tiny-det: dense has no average column
    assert "No average: dense transfer papers" in html


def test_family_average_by_hand(family_results: Path, tmp_path: Path) -> None:
    assert family_average({"x": 81.0, "y": 90.0}) == 85.5
    assert family_average({"x": 81.0, "y": None}) is None
    site = build_site(family_results, Registry(), tmp_path / "site")
    html = (site / "index.html").read_text()
    rows = table_rows(html, "family-vision-table")
    # columns: method, tiny-knn, tiny-knn-paper, tiny-linear2, tiny-separation, average (over the three top-1 tasks)
    assert "average 3 tasks · top1" in html.replace("<br>", " ").replace('<span class="n">', "").replace("</span>", "")
    avg = {r[0][1]: r[-1][1] for r in rows}
    # nobody has all three top-1 tasks here: every average is empty
    assert set(avg.values()) == {"—"}
    # without tiny-knn-paper's results the averaged tasks are tiny-knn and tiny-linear2:
    # a: knn (80 + 82) / 2 = 81, linear 90 -> (81 + 90) / 2 = 85.5; b: knn 70, linear (60 + 64 + 68) / 3 = 64
    # -> (70 + 64) / 2 = 67; c has no linear result and d none of them; tiny-separation (not top-1) is not averaged
    without = _write(tmp_path / "results2", {m: v for m, v in VALUES.items() if m in ("a", "b", "c", "d")})
    reg = Registry()
    for task_id, v in (("tiny-knn", 99.0), ("tiny-linear2", 99.0)):  # features at bf16: a row of its own
        rec = make_record(reg.task(task_id), "f", 0, v)
        write_result(without, ResultRecord.model_validate({**rec.model_dump(), "precision": "bf16"}))
    site = build_site(without, Registry(), tmp_path / "site2")
    html = (site / "index.html").read_text()
    assert "No cell shown has a paper number for its task and metric" in html  # no claimer here
    rows = table_rows(html, "family-vision-table")
    # the bf16 row has both tasks but no average: it is not the tasks' fp32 setting
    assert [(r[0][1], r[-1][1]) for r in rows] == [("a", "85.50"), ("b", "67.00"), ("c", "—"), ("d", "—"),
                                                   ("f [bf16]", "—")]
    assert float(rows[0][-1][0]["data-sort"]) == pytest.approx(85.5)


def test_same_setting_number_beside_the_cell(family_results: Path, tmp_path: Path) -> None:
    site = build_site(family_results, Registry(), tmp_path / "site")
    html = (site / "index.html").read_text()
    rows = {r[0][1]: r for r in table_rows(html, "family-vision-table")}
    cell = rows["claimer"][2]  # tiny-knn-paper (tasks sorted: tiny-knn, tiny-knn-paper, ...)
    vals = [71.0, 73.0, 75.5]
    delta = statistics.mean(vals) - 70.0  # 73.1667 - 70
    assert cell[1] == (f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f} n=3 "
                       f"paper 70.00 Δ +{delta:.2f} paper 60.00 settings differ")
    assert "+3.17" in cell[1] and "No cell shown has a paper number" not in html
    # the same-setting number is shown as a reproduction target, the other greyed; top5 is not the cell's metric
    assert 'title="paper, same setting: digits, kNN k=5 (Table 1)">paper 70.00' in html
    assert '<span class="paper muted" title="paper, another setting: digits, another backbone (Table 2)">' in html
    assert "paper 99.00" not in html.split('id="reported"')[0]
    # other methods' cells carry no paper number
    assert all("paper" not in c[1] for m, r in rows.items() if m != "claimer" for c in r[1:])
