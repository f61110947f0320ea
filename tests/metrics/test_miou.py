"""mIoU (mmseg IoUMetric semantics) vs a hand-worked example and sklearn's confusion matrix."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from cl_bench.errors import ClBenchError
from cl_bench.metrics.miou import IoUAccumulator, intersect_and_union, mean_iou


def test_hand_worked_example() -> None:
    # 3 classes; label row-major, 255 = ignore
    label = np.array([[0, 0, 1, 1],
                      [0, 2, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1],
                     [2, 2, 0, 0]], np.uint8)
    # valid pixels: 7. class 0: label {(0,0),(0,1),(1,0)}, pred {(0,0),(1,2)} (+ (1,3) ignored) -> I=1, U=3+2-1=4
    # class 1: label {(0,2),(0,3),(1,2)}, pred {(0,1),(0,2),(0,3)} -> I=2, U=3+3-2=4
    # class 2: label {(1,1)}, pred {(1,0),(1,1)} -> I=1, U=1+2-1=2
    metrics, extras = mean_iou([pred], [label], 3)
    assert extras["per_class_iou"] == pytest.approx({"0": 25.0, "1": 50.0, "2": 50.0})
    assert metrics["mIoU"] == pytest.approx(125 / 3)
    assert metrics["aAcc"] == pytest.approx(100 * 4 / 7)
    assert metrics["mAcc"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 1) / 3)


def test_against_sklearn_confusion_matrix_random() -> None:
    rng = np.random.default_rng(0)
    c = 19
    acc = IoUAccumulator(c)
    preds, labels = [], []
    for _ in range(6):
        lab = rng.integers(0, c, size=(37, 53)).astype(np.uint8)
        lab[rng.uniform(size=lab.shape) < 0.2] = 255
        lab[lab == 7] = 255  # class 7 never labelled ...
        pred = np.where(rng.uniform(size=lab.shape) < 0.6, lab, rng.integers(0, c, size=lab.shape)).astype(np.uint8)
        pred[pred == 255] = 3
        pred[pred == 16] = 0  # ... and class 16 never predicted
        preds.append(pred)
        labels.append(lab)
        acc.update(pred, lab)
    y = np.concatenate([lab.ravel() for lab in labels])
    p = np.concatenate([pr.ravel() for pr in preds])
    keep = y != 255
    cm = confusion_matrix(y[keep], p[keep], labels=list(range(c))).astype(np.float64)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    metrics, extras = acc.result()
    got = np.array([extras["per_class_iou"][str(k)] for k in range(c)]) / 100
    np.testing.assert_allclose(got, iou, atol=1e-12)
    assert metrics["mIoU"] == pytest.approx(100 * np.nanmean(iou), abs=1e-6)
    assert metrics["aAcc"] == pytest.approx(100 * inter.sum() / cm.sum(), abs=1e-6)


def test_dataset_level_not_mean_of_images() -> None:
    a_lab, a_pred = np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8)  # class 0 perfect, 4 px
    b_lab = np.array([[1]], np.uint8)
    b_pred = np.array([[0]], np.uint8)  # class 1 missed, class 0 false positive
    m, _ = mean_iou([a_pred, b_pred], [a_lab, b_lab], 2)
    # dataset level: class 0 I=4 U=5 -> 0.8; class 1 I=0 U=1 -> 0 => mIoU 40
    assert m["mIoU"] == pytest.approx(40.0)


def test_absent_class_is_nan_and_excluded() -> None:
    lab = np.array([[0, 1]], np.uint8)
    m, e = mean_iou([lab.copy()], [lab], 4)
    assert m["mIoU"] == pytest.approx(100.0)
    assert e["classes_absent"] == ["2", "3"] and np.isnan(e["per_class_iou"]["2"])


def test_out_of_range_prediction_counts_as_miss() -> None:
    lab = np.array([[0, 0]], np.uint8)
    pred = np.array([[0, 200]], np.uint8)
    i, u, p, lbl = intersect_and_union(pred, lab, 2)
    assert i.tolist() == [1, 0] and u.tolist() == [2, 0] and p.tolist() == [1, 0] and lbl.tolist() == [2, 0]


def test_bad_inputs() -> None:
    with pytest.raises(ClBenchError, match="shape"):
        mean_iou([np.zeros((2, 2))], [np.zeros((2, 3))], 2)
    with pytest.raises(ClBenchError, match="label values"):
        mean_iou([np.zeros((1, 1))], [np.full((1, 1), 5)], 2)
    with pytest.raises(ClBenchError, match="empty"):
        IoUAccumulator(3).result()
    with pytest.raises(ClBenchError, match="ignore"):
        mean_iou([np.zeros((1, 1))], [np.full((1, 1), 255)], 2)
