"""Linear probe: against scikit-learn's LogisticRegression, λ selection, metrics, the protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from cl_bench import components
from cl_bench.data.splits import stratified_split
from cl_bench.data.image.types import ArrayImageSplit, ImageClassificationData
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.linear_probe_solver import (
    LinearProbeParams,
    accuracy,
    classification_metrics,
    fit_logistic,
    linear_probe_scores,
    select_l2,
    sklearn_c,
    standardize,
    topk_correct,
)
from cl_bench.params import validate_params


@pytest.fixture(autouse=True)
def one_blas_thread():
    """scikit-learn's BLAS on one thread: oversubscribed BLAS threads make fits take 100x longer."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardized digits pixels, a fixed stratified 70/30 split."""
    X, y = load_digits(return_X_y=True)
    tr, te = stratified_split(y, 0.3, 0)
    xtr, xte = standardize(X[tr].astype(np.float32), X[te].astype(np.float32))
    return xtr, y[tr], xte, y[te]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("l2", [1e-4, 1e-2, 3.0])
def test_matches_sklearn_at_matched_regularisation(digits, l2):
    xtr, ytr, xte, yte = digits
    ref = LogisticRegression(C=sklearn_c(l2, len(ytr)), tol=1e-10, max_iter=20000).fit(
        xtr.astype(np.float64), ytr
    )
    p_ref = ref.predict_proba(xte.astype(np.float64))
    # float64 to a tight tolerance: the same minimiser
    W, b = fit_logistic(torch.from_numpy(xtr).double(), ytr, l2, 10, max_iter=20000, tol=1e-7)
    p64 = _softmax(xte.astype(np.float64) @ W.numpy() + b.numpy())
    assert np.abs(p64 - p_ref).max() < 5e-4
    np.testing.assert_allclose(W.numpy().T, ref.coef_, atol=5e-4 * max(1.0, np.abs(ref.coef_).max()))
    # the protocol's float32 path at its default tolerance
    W, b = fit_logistic(torch.from_numpy(xtr), ytr, l2, 10)
    p32 = _softmax(xte.astype(np.float64) @ W.double().numpy() + b.double().numpy())
    assert np.abs(p32 - p_ref).max() < 1e-2
    assert abs(int((p32.argmax(1) == yte).sum()) - int((p_ref.argmax(1) == yte).sum())) <= 1


def test_two_classes_match_sklearn_binary(digits):
    """With 2 classes our symmetric softmax model with λ is sklearn's binary model with C = 1/(λn)."""
    xtr, ytr, xte, yte = digits
    tr, te = np.isin(ytr, [3, 8]), np.isin(yte, [3, 8])
    x, y = xtr[tr].astype(np.float64), (ytr[tr] == 8).astype(np.int64)
    l2 = 1e-2
    ref = LogisticRegression(C=2 * sklearn_c(l2, len(y)), tol=1e-10, max_iter=20000).fit(x, y)
    W, b = fit_logistic(torch.from_numpy(x), y, l2, 2, max_iter=20000, tol=1e-7)
    p = _softmax(xte[te].astype(np.float64) @ W.numpy() + b.numpy())[:, 1]
    assert np.abs(p - ref.predict_proba(xte[te].astype(np.float64))[:, 1]).max() < 1e-5
    np.testing.assert_allclose((W[:, 1] - W[:, 0]).numpy(), ref.coef_[0], atol=1e-4)


def test_select_l2_picks_best_validation_accuracy(digits):
    xtr, ytr, _, _ = digits
    fit, val = stratified_split(ytr, 0.2, 1)
    X, y = torch.from_numpy(xtr), torch.from_numpy(ytr)
    grid = [1e-1, 1e-4, 1e-2, 1.0, 1e-3]
    best, val_acc, (W, b) = select_l2(X[fit], y[fit], X[val], y[val], grid, 10)
    direct = {}  # independent cold-started fits, accuracy by an explicit loop
    for l2 in grid:
        Wd, bd = fit_logistic(X[fit], y[fit], l2, 10)
        logits = (X[val] @ Wd + bd).numpy()
        direct[l2] = sum(int(np.argmax(row) == t) for row, t in zip(logits, ytr[val])) / len(val)
    assert set(val_acc) == set(grid)
    for l2 in grid:
        assert abs(val_acc[l2] - direct[l2]) * len(val) <= 1
    top = max(direct.values())
    assert best == max(l2 for l2 in grid if direct[l2] == top)
    assert accuracy(X[val], y[val], W, b) == val_acc[best]


def test_topk_correct_hand_worked():
    scores = np.array([[0.1, 0.5, 0.5, 0.2], [3.0, 1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    labels = np.array([2, 2, 3])
    # item 0: class 1 ties with class 2 and has the lower index, so class 2 ranks second
    assert topk_correct(scores, labels, 1).tolist() == [False, False, False]
    assert topk_correct(scores, labels, 2).tolist() == [True, True, False]
    assert topk_correct(scores, labels, 4).tolist() == [True, True, True]
    assert classification_metrics(scores, labels) == {"top1": 0.0}  # no top5 with 4 classes


def test_standardize_uses_train_statistics_and_keeps_constant_features():
    train = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    test = np.array([[2.0, 7.0]], dtype=np.float32)
    tr, te = standardize(train, test)
    np.testing.assert_allclose(tr, [[-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(te, [[0.0, 2.0]])
    assert tr.dtype == np.float32


def _data(X: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[ImageClassificationData, np.ndarray, np.ndarray]:
    tr, te = stratified_split(y, 0.3, seed)
    imgs = X.reshape(len(X), 1, 8, 8).astype(np.float32) / 16.0
    names = [str(c) for c in range(int(y.max()) + 1)]
    data = ImageClassificationData("t", ArrayImageSplit(imgs[tr], y[tr]), ArrayImageSplit(imgs[te], y[te]), names, 1, (8, 8))
    return data, tr, te


def _ctx(seed: int = 0) -> RunContext:
    return RunContext(torch.device("cpu"), seed, lambda model, split: split.images.reshape(len(split), -1))


def test_protocol_on_digits_pixels_is_deterministic():
    X, y = load_digits(return_X_y=True)
    data, _, _ = _data(X, y)
    proto = components.get("protocol", "linear_probe")
    params = validate_params(proto.params, {"l2_grid": [1e-4, 1e-2, 1.0]}, "test")
    a = proto.run(None, data, params, _ctx(3))
    b = proto.run(None, data, params, _ctx(3))
    assert a.metrics == b.metrics and a.extras == b.extras
    assert a.metrics["top1"] > 90 and 100 >= a.metrics["top5"] >= a.metrics["top1"]
    assert a.extras["l2"] in (1e-4, 1e-2, 1.0) and set(a.extras["val_top1"]) == {"0.0001", "0.01", "1.0"}
    assert a.extras["val_top1"][repr(a.extras["l2"])] == max(a.extras["val_top1"].values())


def test_protocol_two_classes_reports_top1_only():
    X, y = load_digits(return_X_y=True)
    keep = np.isin(y, [1, 7])
    data, _, _ = _data(X[keep], (y[keep] == 7).astype(np.int64))
    proto = components.get("protocol", "linear_probe")
    res = proto.run(None, data, LinearProbeParams(l2_grid=[1e-3, 1e-1]), _ctx())
    assert set(res.metrics) == {"top1"} and res.metrics["top1"] > 95


def test_single_l2_skips_selection_and_matches_direct_fit(digits):
    xtr, ytr, xte, _ = digits
    scores, extras = linear_probe_scores(xtr, ytr, xte, 10, LinearProbeParams(l2_grid=[1e-2]), seed=0)
    W, b = fit_logistic(torch.from_numpy(standardize(xtr, xte)[0]), ytr, 1e-2, 10)
    xte_std = torch.from_numpy(standardize(xtr, xte)[1])
    torch.testing.assert_close(scores, xte_std @ W + b)
    assert extras["l2"] == 1e-2 and "val_top1" not in extras
    assert extras["sklearn_C"] == pytest.approx(1 / (2 * 1e-2 * len(ytr)))


@pytest.mark.parametrize(
    "params, field",
    [({"l2_grid": [1e-3, -1.0]}, "l2_grid.1"), ({"l2_grid": []}, "l2_grid"), ({"val_fraction": 1.0}, "val_fraction"),
     ({"lambda": 1.0}, "lambda")],
)
def test_bad_params_name_the_field(params, field):
    with pytest.raises(ClBenchError, match=f"'{field}'"):
        validate_params(LinearProbeParams, params, "task.yaml: protocol.params")
