"""The store cannot be escaped or confused: plain ids, records that agree with their path, a result
and its predictions that change together, bounded reads of what is stored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from cl_bench import atomic, predictions
from cl_bench.errors import ClBenchError
from cl_bench.predictions import Predictions, read_predictions
from cl_bench.registry import Registry
from cl_bench.store import iter_results, result_path, write_result
from tests.record_helpers import make_record


def _preds(pred: list[int]) -> Predictions:
    return Predictions(np.arange(len(pred)), np.asarray(pred), np.asarray(pred) == 0, np.zeros(len(pred), int))


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "../x", "", "-x", "a b", "x" * 101])
def test_ids_are_plain_names(tiny_registry: Registry, tmp_path: Path, bad: str) -> None:
    with pytest.raises(ClBenchError, match="is not a plain name"):
        result_path(tmp_path, bad, "tiny-knn", 0)
    with pytest.raises(ValidationError, match="should match pattern"):
        make_record(tiny_registry.task("tiny-knn"), bad, 0, 50.0)
    with pytest.raises(ClBenchError, match="seed"):
        result_path(tmp_path, "m", "tiny-knn", -1)


def test_a_record_must_agree_with_its_path(tiny_registry: Registry, tmp_path: Path) -> None:
    task = tiny_registry.task("tiny-knn")
    p = write_result(tmp_path, make_record(task, "m", 0, 50.0))
    assert [r.seed for _, r in iter_results(tmp_path)] == [0]
    (p.parent / "seed1.json").write_bytes(p.read_bytes())  # a copy would count seed 0 twice
    with pytest.raises(ClBenchError, match="seed1.json: the record says .* seed 0, which belongs at m/tiny-knn/seed0.json"):
        list(iter_results(tmp_path))
    (p.parent / "seed1.json").unlink()
    other = tmp_path / "n" / "tiny-knn"
    other.mkdir(parents=True)
    (other / "seed0.json").write_bytes(p.read_bytes())  # another method's folder
    with pytest.raises(ClBenchError, match="method 'm'"):
        list(iter_results(tmp_path))
    (other / "seed0.json").unlink()
    (p.parent / "seed0.backup.json").write_text("{}")  # not a result name: ignored
    assert len(list(iter_results(tmp_path))) == 1


def test_predictions_are_content_addressed_and_change_with_their_result(tiny_registry: Registry,
                                                                        tmp_path: Path) -> None:
    task = tiny_registry.task("tiny-knn")
    p = write_result(tmp_path, make_record(task, "m", 0, 50.0), _preds([0, 1, 0]))
    first = json.loads(p.read_text())["predictions"]
    assert first["file"] == f"seed0.{first['sha256'][:16]}.preds.npz"
    p2 = write_result(tmp_path, make_record(task, "m", 0, 60.0), _preds([0, 0, 0]))
    second = json.loads(p2.read_text())["predictions"]
    assert second["file"] != first["file"]
    assert sorted(f.name for f in p.parent.iterdir() if not f.name.startswith(".")) == sorted(["seed0.json", second["file"]])
    assert read_predictions(p2, second).pred.tolist() == [0, 0, 0]


def test_an_interrupted_rewrite_leaves_the_old_pair_whole(tiny_registry: Registry, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    task = tiny_registry.task("tiny-knn")
    p = write_result(tmp_path, make_record(task, "m", 0, 50.0), _preds([0, 1, 0]))
    old_text = p.read_text()
    real = atomic.write_atomic

    def dies_on_the_json(path: Path, data: bytes | str) -> None:
        if str(path).endswith(".json"):
            raise KeyboardInterrupt  # killed between the predictions and the JSON
        real(path, data)

    monkeypatch.setattr("cl_bench.store.write_atomic", dies_on_the_json)
    monkeypatch.setattr(predictions, "write_atomic", real)
    with pytest.raises(KeyboardInterrupt):
        write_result(tmp_path, make_record(task, "m", 0, 70.0), _preds([1, 1, 1]))
    assert p.read_text() == old_text  # the old JSON ...
    ref = json.loads(old_text)["predictions"]
    assert read_predictions(p, ref).pred.tolist() == [0, 1, 0]  # ... still names its own, intact predictions


def test_stored_predictions_must_be_siblings(tiny_registry: Registry, tmp_path: Path) -> None:
    rec = make_record(tiny_registry.task("tiny-knn"), "m", 0, 50.0)
    for bad in ("../../etc/passwd", "/etc/passwd", "seed0.preds.npz/../x", "other.npz"):
        with pytest.raises(ValidationError, match="is not a seed<k>"):
            rec.model_validate({**rec.model_dump(), "predictions": {"file": bad, "sha256": "0" * 64, "n": 1}})


def test_non_finite_metrics_never_load_or_write(tiny_registry: Registry, tmp_path: Path) -> None:
    rec = make_record(tiny_registry.task("tiny-knn"), "m", 0, 50.0)
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValidationError, match="finite number"):
            rec.model_validate({**rec.model_dump(), "metrics": {"top1": value}})
    with pytest.raises(ValidationError, match="primary metric 'top1' has no finite value"):
        rec.model_validate({**rec.model_dump(), "metrics": {"top1": None}})
    undefined = rec.model_validate({**rec.model_dump(), "metrics": {"top1": 50.0, "APl": None}})
    p = write_result(tmp_path, undefined)
    assert json.loads(p.read_text())["metrics"] == {"APl": None, "top1": 50.0}
    rec.metrics["top5"] = float("nan")  # mutated after construction: the store re-validates
    with pytest.raises(ValidationError, match="finite number"):
        write_result(tmp_path, rec)


def test_predictions_are_read_bounded(tiny_registry: Registry, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_result(tmp_path, make_record(tiny_registry.task("tiny-knn"), "m", 0, 50.0), _preds([0] * 1000))
    ref = json.loads(p.read_text())["predictions"]
    monkeypatch.setattr(predictions, "MAX_PREDICTIONS_BYTES", 5000)  # the arrays inflate to ~10 KB
    with pytest.raises(ClBenchError, match=r"declares \d+ bytes of arrays, more than 5000; refused"):
        read_predictions(p, ref)
    monkeypatch.setattr(predictions, "MAX_PREDICTIONS_BYTES", 100)  # the file itself is larger than that
    with pytest.raises(ClBenchError, match="more than the 100-byte limit"):
        read_predictions(p, ref)
