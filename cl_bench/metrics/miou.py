"""Semantic-segmentation mIoU with mmsegmentation's ``IoUMetric`` semantics.

Per image: drop pixels whose label is ``ignore_index``; of the rest, count per class the
intersection (pred == label == c), the predicted area (pred == c; predictions outside
``0..C-1`` count for no class) and the labelled area; union = pred + label - intersection.
The four counts are summed over the WHOLE split (dataset-level, not a mean of per-image IoUs).
Then IoU_c = I_c / U_c (NaN when U_c = 0: a class neither present nor predicted), Acc_c =
I_c / label_c, mIoU = nanmean(IoU) ×100, mAcc = nanmean(Acc) ×100, aAcc = ΣI / Σlabel ×100.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cl_bench.errors import ClBenchError


def intersect_and_union(
    pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int = 255
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(intersection, union, predicted area, label area), each int64 [num_classes], for one image."""
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.shape != label.shape:
        raise ClBenchError(f"prediction shape {pred.shape} differs from label shape {label.shape}")
    keep = label != ignore_index
    p = pred[keep].astype(np.int64)
    lab = label[keep].astype(np.int64)
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise ClBenchError(
            f"label values must be 0..{num_classes - 1} or {ignore_index} (ignore); found {int(lab.max())}"
        )
    in_range = (p >= 0) & (p < num_classes)
    area_inter = np.bincount(lab[p == lab], minlength=num_classes)[:num_classes]
    area_pred = np.bincount(p[in_range], minlength=num_classes)[:num_classes]
    area_label = np.bincount(lab, minlength=num_classes)[:num_classes]
    return area_inter, area_pred + area_label - area_inter, area_pred, area_label


class IoUAccumulator:
    """Accumulates the four per-class counts over a split; :meth:`result` gives the metrics."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.intersect = np.zeros(num_classes, np.int64)
        self.union = np.zeros(num_classes, np.int64)
        self.pred_area = np.zeros(num_classes, np.int64)
        self.label_area = np.zeros(num_classes, np.int64)
        self.images = 0

    def update(self, pred: np.ndarray, label: np.ndarray) -> None:
        """Add one image (or a batch: any shape, pred and label alike)."""
        i, u, p, lab = intersect_and_union(pred, label, self.num_classes, self.ignore_index)
        self.intersect += i
        self.union += u
        self.pred_area += p
        self.label_area += lab
        self.images += 1

    def result(self, class_names: Sequence[str] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
        """(metrics mIoU/mAcc/aAcc in percent, extras with per-class IoU/Acc and the counts)."""
        if self.images == 0:
            raise ClBenchError("no images were evaluated: the segmentation split is empty")
        if self.label_area.sum() == 0:
            raise ClBenchError("every label pixel is ignore (255): nothing to evaluate")
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = self.intersect / self.union
            acc = self.intersect / self.label_area
        names = list(class_names) if class_names is not None else [str(c) for c in range(self.num_classes)]
        metrics = {
            "mIoU": float(np.nanmean(iou) * 100),
            "mAcc": float(np.nanmean(acc) * 100),
            "aAcc": float(self.intersect.sum() / self.label_area.sum() * 100),
        }
        extras = {
            "per_class_iou": {n: float(v * 100) for n, v in zip(names, iou)},
            "per_class_acc": {n: float(v * 100) for n, v in zip(names, acc)},
            "classes_absent": [n for n, u in zip(names, self.union) if u == 0],
            "counts": {"intersect": self.intersect.tolist(), "union": self.union.tolist(),
                       "pred": self.pred_area.tolist(), "label": self.label_area.tolist()},
        }
        return metrics, extras


def mean_iou(
    preds: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int, ignore_index: int = 255
) -> tuple[dict[str, float], dict[str, Any]]:
    """mmseg IoUMetric over paired predictions and labels."""
    if len(preds) != len(labels):
        raise ClBenchError(f"{len(preds)} predictions for {len(labels)} label maps")
    acc = IoUAccumulator(num_classes, ignore_index)
    for p, lab in zip(preds, labels):
        acc.update(p, lab)
    return acc.result()
