"""Protocols on features read in blocks from the cache (features larger than memory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from cl_bench.data.splits import stratified_split
from cl_bench.engine import RunOptions, run
from cl_bench.feature_store import EntryWriter, StoredFeatures, open_entry
from cl_bench.memory_budget import parse_bytes
from cl_bench.protocols.knn import knn_predict, knn_predict_streamed
from cl_bench.protocols.linear_probe_solver import (
    LinearProbeParams,
    linear_probe_scores,
    sklearn_c,
    standardize,
)
from cl_bench.protocols.linear_probe_stream import StandardizedRows, fit_streamed, streamed_probe_scores


def stored(tmp_path: Path, name: str, array: np.ndarray, dtype: str = "float32") -> StoredFeatures:
    writer = EntryWriter(tmp_path / name, len(array), 64, None, dtype)
    for i in range(0, len(array), 50):
        writer.write(array[i : i + 50])
    writer.finish()
    entry = open_entry(tmp_path / name)
    assert entry is not None
    return entry


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    tr, te = stratified_split(y, 0.3, 0)
    return X[tr].astype(np.float32), y[tr], X[te].astype(np.float32), y[te]


def test_streamed_probe_agrees_with_the_full_batch_probe(tmp_path: Path, digits) -> None:
    xtr, ytr, xte, yte = digits
    params = LinearProbeParams(l2_grid=[1e-4, 1e-2, 1.0])
    full, e_full = linear_probe_scores(xtr, ytr, xte, 10, params, seed=0)
    streamed, e_str = streamed_probe_scores(stored(tmp_path, "tr", xtr), ytr, stored(tmp_path, "te", xte), 10,
                                            params, seed=0, block_rows=97)
    assert e_full["l2"] == e_str["l2"] and e_full["val_top1"] == e_str["val_top1"]
    assert torch.equal(full.argmax(1), streamed.argmax(1))
    assert (full - streamed).abs().max() < 1e-3 * full.abs().max()
    assert "streamed" in e_str["solver"]


def test_streamed_fit_matches_sklearn(tmp_path: Path, digits) -> None:
    """The streamed objective against the reference library, as the full-batch one is tested."""
    xtr, ytr, xte, _ = digits
    l2 = 1e-2
    ztr, zte = standardize(xtr, xte)
    ref = LogisticRegression(C=sklearn_c(l2, len(ytr)), tol=1e-10, max_iter=20000).fit(ztr.astype(np.float64), ytr)
    mean, std = np.zeros(64), np.ones(64)
    rows = StandardizedRows(stored(tmp_path, "z", ztr), None, ytr, mean, std, torch.device("cpu"), 101)
    W, b = fit_streamed(rows, l2, 10, max_iter=5000, tol=1e-6)
    logits = zte.astype(np.float64) @ W.double().numpy() + b.double().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert np.abs(p - ref.predict_proba(zte.astype(np.float64))).max() < 1e-2


def test_float16_entries_read_back_as_float32(tmp_path: Path) -> None:
    a = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float16)
    entry = stored(tmp_path, "h", a, "float16")
    assert entry.dtype == np.float16 and entry.load().dtype == np.float32
    assert np.array_equal(entry.load(), a.astype(np.float32))
    assert np.array_equal(entry.take(np.array([299, 0, 150])), a[[299, 0, 150]].astype(np.float32))


def test_streamed_knn_picks_the_same_neighbours_with_ties(tmp_path: Path) -> None:
    # one-hot-like rows: every similarity is exactly 0, 1/sqrt(2) or 1 -> many exact ties
    rng = np.random.default_rng(0)
    train = np.eye(6, dtype=np.float32)[rng.integers(0, 6, 400)]
    train[::7] += np.eye(6, dtype=np.float32)[rng.integers(0, 6, len(train[::7]))]
    test = np.eye(6, dtype=np.float32)[rng.integers(0, 6, 50)]
    labels = rng.integers(0, 5, 400)
    ref = knn_predict(torch.from_numpy(train), labels, torch.from_numpy(test), 20, 0.07, 5)
    for bank_rows in (1, 13, 64, 400):
        got = knn_predict_streamed(stored(tmp_path, f"b{bank_rows}", train), labels, test, 20, 0.07, 5,
                                   bank_rows=bank_rows)
        assert torch.equal(got, ref)


def test_streamed_knn_close_on_ordinary_features(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    train, test = rng.standard_normal((700, 16)).astype(np.float32), rng.standard_normal((90, 16)).astype(np.float32)
    labels = rng.integers(0, 7, 700)
    ref = knn_predict(torch.from_numpy(train), labels, torch.from_numpy(test), 10, 0.1, 7)
    got = knn_predict_streamed(stored(tmp_path, "o", train), labels, test, 10, 0.1, 7, bank_rows=128)
    assert torch.equal(got.argmax(1), ref.argmax(1)) and torch.allclose(got, ref, rtol=1e-4)


def test_engine_switches_to_streamed_protocols_under_a_small_budget(tiny_registry, tmp_path, monkeypatch) -> None:
    method = tiny_registry.method("tiny-random")
    out = {}
    for budget in ("64G", "1K"):
        monkeypatch.setenv("CLBENCH_MEMORY_BUDGET", budget)
        opts = RunOptions(results_dir=tmp_path / budget, cache_dir=tmp_path / "cache")
        out[budget] = [run(tiny_registry.task(t), method, opts).record for t in ("tiny-linear", "tiny-knn")]
    (lin_full, knn_full), (lin_str, knn_str) = out["64G"], out["1K"]
    assert lin_full.extras["solver"] == "L-BFGS, full batch" and "streamed" in lin_str.extras["solver"]
    assert lin_full.extras["l2"] == lin_str.extras["l2"] and lin_full.metrics == lin_str.metrics
    assert "memory_bank" not in knn_full.extras and knn_str.extras["memory_bank"] == "streamed in blocks"
    assert knn_full.metrics == knn_str.metrics


def test_memory_budget_sizes() -> None:
    assert parse_bytes("4G") == 4 << 30 and parse_bytes("512M") == 512 << 20 and parse_bytes("1000") == 1000
    assert parse_bytes("1.5GiB") == int(1.5 * (1 << 30))
    from cl_bench.errors import ClBenchError

    with pytest.raises(ClBenchError, match="not a size"):
        parse_bytes("lots")
