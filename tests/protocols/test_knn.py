"""Weighted kNN: against explicit loops, scikit-learn's KNeighborsClassifier, chunking and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from cl_bench import components
from cl_bench.data.splits import stratified_split
from cl_bench.data.image.types import ArrayImageSplit, ImageClassificationData
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.knn import KnnParams, auto_chunk_size, knn_predict
from cl_bench.params import validate_params


@pytest.fixture(autouse=True)
def one_blas_thread():
    """scikit-learn's BLAS on one thread: oversubscribed BLAS threads make fits take 100x longer."""
    with threadpool_limits(limits=1):
        yield


def brute_force_scores(train: np.ndarray, labels: np.ndarray, test: np.ndarray, k: int, T: float, C: int) -> np.ndarray:
    """The protocol written out with loops in float64 (ties: the lower training index)."""
    out = np.zeros((len(test), C))
    for i, q in enumerate(test):
        qn = math.sqrt(sum(float(v) ** 2 for v in q))
        sims = []
        for j, x in enumerate(train):
            xn = math.sqrt(sum(float(v) ** 2 for v in x))
            sims.append((sum(float(a) * float(b) for a, b in zip(q, x)) / (qn * xn), j))
        for s, j in sorted(sims, key=lambda t: (-t[0], t[1]))[: min(k, len(train))]:
            out[i, labels[j]] += math.exp(s / T)
    return out


def _gaussian(n_train: int, n_test: int, d: int, C: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1, (C, d))
    ytr, yte = rng.integers(0, C, n_train), rng.integers(0, C, n_test)
    xtr = (means[ytr] + rng.normal(0, 1.5, (n_train, d))).astype(np.float32)
    xte = (means[yte] + rng.normal(0, 1.5, (n_test, d))).astype(np.float32)
    return xtr, ytr, xte, yte


@pytest.mark.parametrize("k, T", [(5, 0.07), (20, 0.5)])
def test_matches_explicit_loops(k, T):
    xtr, ytr, xte, _ = _gaussian(150, 12, 6, 4)
    got = knn_predict(xtr, ytr, xte, k, T, 4).numpy()
    ref = brute_force_scores(xtr, ytr, xte, k, T, 4)
    np.testing.assert_allclose(got, ref, rtol=1e-4)


def test_identical_predictions_to_sklearn_cosine_brute():
    xtr, ytr, xte, _ = _gaussian(3000, 400, 32, 10, seed=1)
    k, T = 20, 0.07
    clf = KNeighborsClassifier(
        n_neighbors=k, metric="cosine", algorithm="brute", weights=lambda d: np.exp((1.0 - d) / T)
    ).fit(xtr.astype(np.float64), ytr)
    scores = knn_predict(xtr, ytr, xte, k, T, 10).numpy()
    assert (clf.predict(xte.astype(np.float64)) == scores.argmax(1)).all()
    np.testing.assert_allclose(scores / scores.sum(1, keepdims=True), clf.predict_proba(xte.astype(np.float64)),
                               atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_chunked_equals_unchunked(chunk):
    xtr, ytr, xte, _ = _gaussian(500, 130, 16, 7, seed=2)
    whole = knn_predict(xtr, ytr, xte, 10, 0.1, 7, chunk_size=len(xte))
    part = knn_predict(xtr, ytr, xte, 10, 0.1, 7, chunk_size=chunk)
    torch.testing.assert_close(part, whole, rtol=1e-5, atol=0)
    assert torch.equal(part.argmax(1), whole.argmax(1))


def test_k_beyond_training_set_uses_every_training_item():
    xtr, ytr, xte, _ = _gaussian(9, 3, 5, 3, seed=3)
    got = knn_predict(xtr, ytr, xte, 50, 0.2, 3).numpy()
    np.testing.assert_allclose(got, brute_force_scores(xtr, ytr, xte, 9, 0.2, 3), rtol=1e-5)


def test_tied_neighbours_prefer_lower_training_index():
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    v = [0.6, 0.8]
    train = np.array([[1.0, 0.0], v, v, [1.2, 1.6], [0.0, 1.0]], dtype=np.float32)  # items 1-3 tie at cos 0.6
    labels = np.array([0, 1, 2, 3, 4])
    for chunk in (1, None):
        got = knn_predict(train, labels, q, k=2, T=0.5, num_classes=5, chunk_size=chunk).numpy()
        np.testing.assert_allclose(got, [[math.exp(2.0), math.exp(1.2), 0, 0, 0]], rtol=1e-5)
    got = knn_predict(train, labels, q, k=3, T=0.5, num_classes=5).numpy()
    np.testing.assert_allclose(got, [[math.exp(2.0), math.exp(1.2), math.exp(1.2), 0, 0]], rtol=1e-5)


def test_auto_chunk_size_bounds_the_similarity_block():
    assert auto_chunk_size(1_000_000, budget=1 << 25) == 33
    assert auto_chunk_size(10, budget=100) == 10
    assert auto_chunk_size(10**9, budget=100) == 1


def _digits_data() -> ImageClassificationData:
    X, y = load_digits(return_X_y=True)
    tr, te = stratified_split(y, 0.3, 0)
    imgs = X.reshape(len(X), 1, 8, 8).astype(np.float32) / 16.0
    return ImageClassificationData("digits", ArrayImageSplit(imgs[tr], y[tr]), ArrayImageSplit(imgs[te], y[te]),
                                   [str(c) for c in range(10)], 1, (8, 8))


def test_protocol_on_digits_pixels():
    data = _digits_data()
    ctx = RunContext(torch.device("cpu"), 0, lambda model, split: split.images.reshape(len(split), -1))
    proto = components.get("protocol", "knn")
    res = proto.run(None, data, validate_params(proto.params, {"k": 20, "temperature": 0.07}, "test"), ctx)
    train, test = data.train.images.reshape(len(data.train), -1), data.test.images.reshape(len(data.test), -1)
    expected = knn_predict(train, data.train.labels, test, 20, 0.07, 10).argmax(1).numpy()
    assert res.metrics["top1"] == pytest.approx((expected == data.test.labels).mean() * 100)
    assert res.metrics["top1"] > 95 and res.metrics["top5"] >= res.metrics["top1"]


def test_bad_params_name_the_field():
    with pytest.raises(ClBenchError, match="'k'"):
        validate_params(KnnParams, {"k": 0}, "task.yaml: protocol.params")
    for t in (-1, 0.01):  # 0.01: exp(1 / T) would overflow float32
        with pytest.raises(ClBenchError, match="'temperature'"):
            validate_params(KnnParams, {"temperature": t}, "task.yaml: protocol.params")
    with pytest.raises(ClBenchError, match="'chunk_size'"):
        validate_params(KnnParams, {"chunk_size": 0}, "task.yaml: protocol.params")


def test_smallest_temperature_stays_finite():
    xtr, ytr, xte, _ = _gaussian(40, 5, 4, 3, seed=4)
    xte[0] = xtr[0]  # similarity exactly 1 with one neighbour
    scores = knn_predict(xtr, ytr, xte, 40, 1 / 80, 3)
    assert torch.isfinite(scores).all() and scores.max() > 1e34
