"""Fixed, stratified train/test splits that depend only on the labels and a split seed."""

from __future__ import annotations

from typing import Any

import numpy as np


def stratified_split(
    labels: np.ndarray, test_fraction: float, split_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split item indices into (train, test), class by class.

    Each class with ``n`` items sends ``floor(n * test_fraction + 0.5)`` of them to the test
    split (clamped so a class with >= 2 items keeps at least one on each side). The choice
    uses a private ``numpy`` generator seeded by ``split_seed``, so it ignores global RNG
    state. Both index arrays are returned sorted ascending.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    rng = np.random.Generator(np.random.PCG64(split_seed))
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(np.floor(len(idx) * test_fraction + 0.5))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def class_counts(labels: np.ndarray, num_classes: int) -> list[int]:
    """Number of items of each class 0..num_classes-1, as plain ints (JSON-friendly)."""
    return [int(c) for c in np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)]


def split_meta(train_labels: np.ndarray, test_labels: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Sizes and per-class counts of a train/test split, for ``ImageClassificationData.meta``."""
    return {
        "train_size": len(train_labels),
        "test_size": len(test_labels),
        "train_class_counts": class_counts(train_labels, num_classes),
        "test_class_counts": class_counts(test_labels, num_classes),
    }
