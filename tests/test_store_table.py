import csv
import io
import json
import os
import statistics

import pytest

from cl_bench.cli import main
from cl_bench.report.table import render, summarize
from cl_bench.specs import ResultRecord, Timings
from cl_bench.store import iter_results, result_path, results_frame, write_result


def _record(task_spec, method="m", seed=0, top1=50.0, spec_hash=None):
    return ResultRecord(
        task=task_spec.id, task_version=task_spec.version,
        task_spec_hash=spec_hash or task_spec.spec_hash(), method=method, method_spec_hash="h",
        seed=seed, primary_metric="top1", metrics={"top1": top1, "top5": 99.0},
        model_fingerprint="f" * 64, model_source="trained", dataset_fingerprint="d" * 64,
        code_version="0", libraries={"torch": "x"}, device="cpu", timings=Timings(), created_utc="now",
    )


def test_write_is_atomic_and_leaves_nothing_on_failure(tiny_registry, tmp_path, monkeypatch):
    task = tiny_registry.task("tiny-knn")
    rec = _record(task)
    path = write_result(tmp_path, rec)
    assert path == result_path(tmp_path, "m", "tiny-knn", 0)
    assert ResultRecord.model_validate(json.loads(path.read_text())) == rec

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(Exception, match="No space left"):
        write_result(tmp_path, _record(task, seed=1))
    assert sorted(p.name for p in path.parent.iterdir()) == ["seed0.json"]  # no partial, no temp


def test_table_mean_std_and_stale(tiny_registry, tmp_path):
    task = tiny_registry.task("tiny-knn")
    values = [61.0, 64.5, 70.25]
    for s, v in enumerate(values):
        write_result(tmp_path, _record(task, "a", s, v))
    write_result(tmp_path, _record(task, "b", 0, 10.0))
    write_result(tmp_path, _record(task, "b", 1, 99.0, spec_hash="0" * 64))  # old spec
    summary = summarize(tmp_path, tiny_registry)
    a = summary.cell("a", "tiny-knn")
    assert a.mean == pytest.approx(statistics.mean(values))
    assert a.std == pytest.approx(statistics.stdev(values))
    assert a.n == 3 and a.seeds == [0, 1, 2]
    b = summary.cell("b", "tiny-knn")
    assert b.n == 1 and b.mean == 10.0  # the stale 99.0 is not mixed in
    assert len(summary.stale) == 1 and "spec" in summary.stale[0].reason

    md = render(summary)
    assert f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} (n=3)" in md
    assert "1 stale result(s)" in md
    rows = list(csv.DictReader(io.StringIO(render(summary, "csv"))))
    assert {(r["method"], r["n"]) for r in rows} == {("a", "3"), ("b", "1")}
    parsed = json.loads(render(summary, "json"))
    assert parsed["cells"][1]["std"] is None and len(parsed["stale"]) == 1
    assert r"\begin{tabular}" in render(summary, "latex")
    assert len(results_frame(tmp_path)) == 5
    assert len(list(iter_results(tmp_path))) == 5


def test_table_cli(tiny_root, tmp_path, capsys):
    from cl_bench.registry import Registry

    task = Registry().task("tiny-knn")
    write_result(tmp_path / "r", _record(task, "a", 0, 42.0))
    assert main(["table", "--results-dir", str(tmp_path / "r"), "--format", "csv"]) == 0
    assert "a,tiny-knn,top1,42" in capsys.readouterr().out


def test_results_dir_default_follows_clbench_results(tmp_path, monkeypatch):
    from cl_bench.cli import build_parser

    monkeypatch.setenv("CLBENCH_RESULTS", str(tmp_path / "elsewhere"))
    assert build_parser().parse_args(["run", "--method", "m", "--task", "t"]).results_dir == str(tmp_path / "elsewhere")
    monkeypatch.delenv("CLBENCH_RESULTS")
    assert build_parser().parse_args(["table"]).results_dir == "results"


def test_a_result_of_another_method_spec_is_stale(tiny_registry, tmp_path):
    """A method whose recipe changed since (its spec hash moved) no longer counts its old results."""
    task = tiny_registry.task("tiny-knn")
    method = tiny_registry.method_ids()[0]
    current = _record(task, method, 0, 40.0).model_copy(
        update={"method_spec_hash": tiny_registry.method(method).spec_hash()})
    write_result(tmp_path, current)
    write_result(tmp_path, _record(task, method, 1, 90.0))  # method_spec_hash "h": another recipe
    summary = summarize(tmp_path, tiny_registry)
    cell = summary.cell(method, "tiny-knn")
    assert cell.n == 1 and cell.mean == 40.0
    assert [s.kind for s in summary.stale] == ["stale"] and "method spec h" in summary.stale[0].reason
