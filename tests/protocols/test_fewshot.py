"""``fewshot_linear``: label draws, the metric against scikit-learn run draw by draw, and the task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.fewshot import (
    FewShotParams,
    draw_indices,
    fewshot_runs,
    summarize,
)
from cl_bench.protocols.linear_probe_solver import sklearn_c
from cl_bench.registry import PROJECT_ROOT
from cl_bench.specs import load_task
from cl_bench.params import validate_params


def blobs(
    n_per_class: int, num_classes: int, dim: int, spread: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim)) * 3
    y = np.repeat(np.arange(num_classes), n_per_class)
    x = centres[y] + spread * rng.normal(size=(len(y), dim))
    perm = rng.permutation(len(y))
    return x[perm].astype(np.float32), y[perm]


def test_draws_take_k_distinct_items_per_class_and_are_reproducible() -> None:
    labels = np.repeat(np.arange(4), [7, 9, 5, 12])
    for k in (1, 3, 5):
        idx = draw_indices(labels, 4, k, draw=0, draw_seed=0)
        assert len(set(idx.tolist())) == 4 * k
        assert np.bincount(labels[idx], minlength=4).tolist() == [k] * 4
        np.testing.assert_array_equal(idx, draw_indices(labels, 4, k, draw=0, draw_seed=0))
    draws = {tuple(draw_indices(labels, 4, 3, draw=d, draw_seed=0)) for d in range(5)}
    assert len(draws) == 5  # different draws pick different subsets
    assert tuple(draw_indices(labels, 4, 3, 0, draw_seed=1)) != tuple(
        draw_indices(labels, 4, 3, 0, draw_seed=0)
    )
    with pytest.raises(ClBenchError, match="class 2 has 5 training items, fewer than 6 shots"):
        draw_indices(labels, 4, 6, 0, 0)


def test_metric_equals_sklearn_fit_draw_by_draw() -> None:
    """Independent computation: the same draws, scikit-learn's LogisticRegression with the same
    objective (C = 1 / (2 l2 n)), standardization written out, accuracy by explicit loop."""
    xtr, ytr = blobs(30, 5, 12, spread=3.0, seed=0)
    xte, yte = blobs(40, 5, 12, spread=3.0, seed=0)
    xte = xte + np.random.default_rng(1).normal(size=xte.shape).astype(np.float32)
    params = FewShotParams(shots=[1, 5], draws=3, l2=0.05)
    ours = fewshot_runs(xtr, ytr, xte, yte, 5, params)[0]
    mu, sd = xtr.mean(0), xtr.std(0)
    for k in (1, 5):
        for d in range(3):
            idx = draw_indices(ytr, 5, k, d, 0)
            clf = LogisticRegression(C=sklearn_c(0.05, len(idx)), tol=1e-10, max_iter=10000)
            clf.fit((xtr[idx] - mu) / sd, ytr[idx])
            pred = clf.predict((xte - mu) / sd)
            correct = sum(1 for p, t in zip(pred, yte) if p == t)
            assert ours[k][d] == pytest.approx(100.0 * correct / len(yte), abs=100.0 / len(yte) + 1e-9)
    m = summarize(ours)
    assert m["top1_1shot"] == pytest.approx(np.mean(ours[1]))
    assert m["top1_5shot_std"] == pytest.approx(np.std(ours[5]))
    assert m["top1"] == pytest.approx((np.mean(ours[1]) + np.mean(ours[5])) / 2)


def test_predictions_one_row_per_shot_draw_and_test_item_reproduce_top1() -> None:
    xtr, ytr = blobs(20, 4, 8, spread=4.0, seed=2)
    xte, yte = blobs(15, 4, 8, spread=4.0, seed=5)
    params = FewShotParams(shots=[1, 3], draws=2, l2=0.05)
    accs, p = fewshot_runs(xtr, ytr, xte, yte, 4, params)
    assert len(p.item) == 2 * 2 * len(yte) and len(set(p.item.tolist())) == len(p.item)
    assert p.item[len(yte) + 7] == "k1/d1/q7" and p.item[-1] == f"k3/d1/q{len(yte) - 1}"
    np.testing.assert_array_equal(p.target, np.tile(yte, 4))
    np.testing.assert_array_equal(p.correct, p.pred == p.target)
    top1 = summarize(accs)["top1"]
    assert 0.0 < top1 < 100.0
    assert top1 == pytest.approx(100 * np.mean(p.pred == p.target), abs=1e-9)
    for k in (1, 3):
        for d in range(2):
            rows = np.char.startswith(p.item.astype(str), f"k{k}/d{d}/")
            assert accs[k][d] == pytest.approx(100 * np.mean(p.correct[rows]), abs=1e-9)
    assert accs == fewshot_runs(xtr, ytr, xte, yte, 4, params)[0]
    np.testing.assert_array_equal(fewshot_runs(xtr, ytr, xte, yte, 4, params)[1].pred, p.pred)  # same draws


def test_separable_classes_are_perfect_with_one_shot() -> None:
    xtr, ytr = blobs(10, 4, 6, spread=0.01, seed=3)
    xte, yte = blobs(10, 4, 6, spread=0.01, seed=3)
    m = summarize(fewshot_runs(xtr, ytr, xte, yte, 4, FewShotParams(shots=[1, 3], draws=2))[0])
    assert m == {
        "top1_1shot": 100.0,
        "top1_1shot_std": 0.0,
        "top1_3shot": 100.0,
        "top1_3shot_std": 0.0,
        "top1": 100.0,
    }


def test_protocol_on_digits_pixels_and_task_spec() -> None:
    task = load_task(PROJECT_ROOT / "tasks" / "digits-fewshot.yaml")
    protocol = components.get("protocol", task.protocol.name)
    params = validate_params(protocol.params, task.protocol.params, task.source)
    assert params.shots == [1, 5, 10] and params.draws == 5
    data = components.get("dataset", task.dataset.name)(task.dataset.params, None)
    flat = torch.nn.Flatten()

    def extract(model, split) -> np.ndarray:
        return model(split.tensor()).numpy()

    ctx = RunContext(torch.device("cpu"), seed=0, extract=extract)
    result = protocol.run(flat, data, params, ctx)
    m = result.metrics
    assert set(m) >= set(task.metrics)
    assert 40.0 < m["top1_1shot"] < m["top1_5shot"] < m["top1_10shot"] <= 100.0  # more labels help
    assert len(result.extras["per_draw_top1"]["5"]) == 5
    assert len(result.predictions.item) == 3 * 5 * len(data.test.labels)
    assert m["top1"] == pytest.approx(100 * result.predictions.correct.mean(), abs=1e-9)
    with pytest.raises(ClBenchError, match="shot counts must be distinct"):
        validate_params(protocol.params, {"shots": [1, 1]}, "here")
