"""Per-item predictions beside results, and `clbench diff` (hand-worked flips, McNemar)."""

import json

import numpy as np
import pytest
from scipy.stats import binom

from cl_bench.cli import main
from cl_bench.engine import RunOptions, run
from cl_bench.predictions import Predictions, predictions_path, referenced_path
from cl_bench.specs import ResultRecord, Timings
from cl_bench.store import write_result


def _record(method: str, seed: int = 0, dataset: str = "d" * 64, task: str = "t") -> ResultRecord:
    return ResultRecord(
        task=task, task_version=1, task_spec_hash="h", method=method, method_spec_hash="h", seed=seed,
        primary_metric="top1", metrics={"top1": 0.0}, model_fingerprint=method[0] * 64, model_source="trained",
        dataset_fingerprint=dataset, code_version="0", libraries={}, device="cpu", timings=Timings(),
        created_utc="now",
    )


def _write(tmp_path, method, pred, target, items=None, **kw):
    pred, target = np.asarray(pred), np.asarray(target)
    items = np.arange(len(pred)) if items is None else np.asarray(items)
    return write_result(tmp_path, _record(method, **kw), Predictions(items, pred, pred == target, target))


def test_diff_hand_worked(tmp_path, capsys):
    target = [0, 1, 2, 3, 4, 5]
    a = _write(tmp_path, "a", [0, 1, 9, 9, 4, 7], target)  # right: 0, 1, 4
    # B lists its items in reverse order. Per item, B says: 0 right, 1 wrong (7), 2 right,
    # 3 wrong with another answer than A (8), 4 wrong (0), 5 wrong with A's answer (7).
    b = _write(tmp_path, "b", [7, 0, 8, 2, 7, 0], [5, 4, 3, 2, 1, 0], items=[5, 4, 3, 2, 1, 0])
    ref = json.loads(a.read_text())["predictions"]
    assert ref["n"] == 6 and predictions_path(a, ref["sha256"]).exists()  # content-addressed beside the JSON
    assert main(["diff", str(a), str(b), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n"], out["both_right"], out["both_wrong"], out["fixed"], out["broken"]) == (6, 1, 2, 1, 2)
    assert {f["item"]: f["kind"] for f in out["flips"]} == {"1": "broken", "2": "fixed", "3": "changed", "4": "broken"}
    assert {f["item"]: (f["pred_a"], f["pred_b"]) for f in out["flips"]}["4"] == ("4", "0")
    # McNemar exact two-sided on 1 fixed vs 2 broken: 2 * P(X <= 1), X ~ Bin(3, 1/2), capped at 1
    assert out["mcnemar_p"] == pytest.approx(min(1.0, 2 * binom.cdf(1, 3, 0.5)))
    assert main(["diff", str(a), str(b)]) == 0
    assert "per-item verdicts" not in capsys.readouterr().out  # the rows are the primary metric's own


def test_diff_says_what_the_rows_verdict_when_the_protocol_tells(tmp_path, capsys):
    rec = _record("a")
    rec.extras["predictions_of"] = "R@1 verdicts"
    p = Predictions(np.arange(3), np.array([0, 1, 1]), np.array([True, True, False]), np.arange(3))
    a = write_result(tmp_path / "a", rec, p)
    b = write_result(tmp_path / "b", _record("b"), p)
    assert main(["diff", str(a), str(b)]) == 0
    assert "per-item verdicts: R@1 verdicts" in capsys.readouterr().out


def test_diff_refuses_other_data_and_tampered_predictions(tmp_path, capsys):
    a = _write(tmp_path, "a", [0, 1], [0, 1])
    b = _write(tmp_path, "b", [0, 0], [0, 1], dataset="e" * 64)
    assert main(["diff", str(a), str(b)]) == 2
    assert "different data" in capsys.readouterr().err
    c = _write(tmp_path, "c", [1, 1, 1], [0, 1, 1])
    assert main(["diff", str(a), str(c)]) == 2
    assert "different items" in capsys.readouterr().err
    d = _write(tmp_path, "d", [1, 1], [0, 1])
    def preds_of(result):
        return referenced_path(result, json.loads(result.read_text())["predictions"])

    preds_of(d).write_bytes(preds_of(a).read_bytes())
    assert main(["diff", str(a), str(d)]) == 2
    assert "sha256" in capsys.readouterr().err


def test_runs_store_predictions_that_agree_with_the_metric(tmp_path):
    from cl_bench.registry import Registry

    reg = Registry()
    opts = RunOptions(results_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    out = run(reg.task("digits-knn"), reg.method("raw-pixels"), opts)
    assert out.path is not None
    preds = out.predictions
    assert preds is not None and len(preds.item) == out.record.extras["n_test"]
    assert 100.0 * preds.correct.mean() == pytest.approx(out.record.metrics["top1"])
    assert np.array_equal(preds.correct, preds.pred == preds.target)
    assert main(["diff", str(out.path), str(out.path)]) == 0

