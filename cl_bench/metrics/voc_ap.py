"""PASCAL VOC detection AP with detectron2's ``PascalVOCDetectionEvaluator`` semantics.

For each IoU threshold 0.50, 0.55, ..., 0.95 and each class (as ``voc_eval``):

- detections are written the way detectron2 writes them: ``xmin + 1``, ``ymin + 1`` (back to
  1-based), coordinates rounded to 0.1 and scores to 0.001 (``round_like_detectron2``);
  ground truth is the 1-based integer box of the XML (``x0 + 1, y0 + 1, x1, y1`` of a record);
- detections are sorted by descending score (``np.argsort(-score)``, numpy's default sort,
  over the class's detections in image order, so ties resolve as in detectron2);
- each detection takes the ground-truth box of its image and class with the largest IoU
  (areas and intersections with the +1 pixel convention); if that IoU > threshold (strict)
  the detection is a TP when the box is not difficult and not yet taken, an FP when it is
  taken, and neither when it is difficult; otherwise an FP;
- ``npos`` counts non-difficult boxes; recall = cumTP / npos; precision = cumTP / max(cumTP +
  cumFP, eps); AP = 11-point interpolated (``use_07_metric``, VOC2007 test) or the area under
  the precision envelope (VOC2012).

AP = mean over thresholds of the mean over classes (×100), AP50 and AP75 the single
thresholds. A class without any non-difficult ground truth gets whatever ``voc_eval`` gives
(0 with the 07 metric) and is listed in ``classes_without_gt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cl_bench.errors import ClBenchError

IOU_THRESHOLDS: tuple[float, ...] = tuple(t / 100.0 for t in range(50, 100, 5))


@dataclass
class ImageDetections:
    """One image's predictions: boxes [N, 4] xyxy 0-based pixels, scores [N], labels [N]."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @staticmethod
    def empty() -> ImageDetections:
        return ImageDetections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass
class VocResult:
    AP: float
    AP50: float
    AP75: float
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # class -> {AP, AP50, AP75}
    npos: dict[str, int] = field(default_factory=dict)
    classes_without_gt: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {"AP": self.AP, "AP50": self.AP50, "AP75": self.AP75}

    def extras(self) -> dict[str, Any]:
        return {"per_class": self.per_class, "npos": self.npos, "classes_without_gt": self.classes_without_gt}


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool) -> float:
    """AP from a recall/precision curve: 11-point interpolation, or the area under the envelope."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            above = rec >= t
            ap += (float(np.max(prec[above])) if above.any() else 0.0) / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _round_half_even_like_format(values: np.ndarray, decimals: int) -> np.ndarray:
    """What ``float(f"{v:.{decimals}f}")`` gives (correctly rounded), for every value."""
    fmt = f"{{:.{decimals}f}}"
    return np.asarray([float(fmt.format(v)) for v in values.tolist()], dtype=np.float64)


def _best_overlaps(bb: np.ndarray, gt: np.ndarray, gt_valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For detections bb [n, 4] and their image's padded GT [n, G, 4]: (max IoU, argmax); -inf if no GT."""
    ixmin = np.maximum(gt[:, :, 0], bb[:, None, 0])
    iymin = np.maximum(gt[:, :, 1], bb[:, None, 1])
    ixmax = np.minimum(gt[:, :, 2], bb[:, None, 2])
    iymax = np.minimum(gt[:, :, 3], bb[:, None, 3])
    iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
    ih = np.maximum(iymax - iymin + 1.0, 0.0)
    inters = iw * ih
    uni = ((bb[:, None, 2] - bb[:, None, 0] + 1.0) * (bb[:, None, 3] - bb[:, None, 1] + 1.0)
           + (gt[:, :, 2] - gt[:, :, 0] + 1.0) * (gt[:, :, 3] - gt[:, :, 1] + 1.0) - inters)
    with np.errstate(divide="ignore", invalid="ignore"):
        overlaps = np.where(gt_valid, inters / np.where(gt_valid, uni, 1.0), -np.inf)
    if overlaps.shape[1] == 0:
        return np.full(len(bb), -np.inf), np.zeros(len(bb), dtype=np.int64)
    return overlaps.max(axis=1), overlaps.argmax(axis=1)


def _class_curve(
    det_img: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
    gt_boxes: list[np.ndarray], gt_difficult: list[np.ndarray], thresholds: Sequence[float],
    use_07_metric: bool, chunk: int = 65536,
) -> tuple[list[float], int]:
    """APs (one per threshold) and npos of one class."""
    n_img = len(gt_boxes)
    gmax = max((len(b) for b in gt_boxes), default=0)
    padded = np.zeros((n_img, gmax, 4), dtype=np.float64)
    valid = np.zeros((n_img, gmax), dtype=bool)
    diff = np.zeros((n_img, gmax), dtype=bool)
    for i, (b, d) in enumerate(zip(gt_boxes, gt_difficult)):
        padded[i, : len(b)] = b
        valid[i, : len(b)] = True
        diff[i, : len(b)] = d
    npos = int((valid & ~diff).sum())
    order = np.argsort(-det_scores)
    det_img, det_boxes = det_img[order], det_boxes[order]
    nd = len(order)
    ovmax = np.empty(nd)
    jmax = np.empty(nd, dtype=np.int64)
    for s in range(0, nd, chunk):
        sl = slice(s, s + chunk)
        ovmax[sl], jmax[sl] = _best_overlaps(det_boxes[sl], padded[det_img[sl]], valid[det_img[sl]])
    has_gt = np.isfinite(ovmax)
    hit_difficult = np.zeros(nd, dtype=bool)
    hit_difficult[has_gt] = diff[det_img[has_gt], jmax[has_gt]]
    gt_key = det_img * max(gmax, 1) + jmax
    aps = []
    for thr in thresholds:
        above = ovmax > thr
        candidate = above & ~hit_difficult
        tp = np.zeros(nd)
        idx = np.flatnonzero(candidate)
        if len(idx):
            _, first = np.unique(gt_key[idx], return_index=True)  # first det to claim each GT box
            tp[idx[first]] = 1.0
        fp = (~above).astype(np.float64) + (candidate & (tp == 0))
        ctp, cfp = np.cumsum(tp), np.cumsum(fp)
        with np.errstate(divide="ignore", invalid="ignore"):
            rec = ctp / float(npos)
        prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
        aps.append(voc_ap(rec, prec, use_07_metric))
    return aps, npos


def evaluate_voc(
    ground_truth: Sequence[Any],
    detections: Sequence[ImageDetections],
    class_names: Sequence[str],
    use_07_metric: bool,
    *,
    thresholds: Sequence[float] = IOU_THRESHOLDS,
    round_like_detectron2: bool = True,
) -> VocResult:
    """Score ``detections[i]`` against ``ground_truth[i]`` (objects with boxes, labels, difficult).

    Ground-truth boxes are 0-based xyxy as the loaders give them (VOC: ``xmin - 1``...).
    """
    if len(ground_truth) != len(detections):
        raise ClBenchError(f"{len(detections)} detection lists for {len(ground_truth)} images; one per image")
    if not ground_truth:
        raise ClBenchError("no test images to evaluate")
    if 0.5 not in thresholds or 0.75 not in thresholds:
        raise ValueError("thresholds must include 0.5 and 0.75")
    n_cls = len(class_names)
    for k, d in enumerate(detections):
        if len(d.labels) and (d.labels.min() < 0 or d.labels.max() >= n_cls):
            raise ClBenchError(f"image #{k}: predicted class outside 0..{n_cls - 1}")
    per_thr: dict[float, list[float]] = {t: [] for t in thresholds}
    result = VocResult(0.0, 0.0, 0.0)
    img_of = np.concatenate([np.full(len(d.labels), i, np.int64) for i, d in enumerate(detections)])
    # +1 on the minima in the boxes' own dtype (detectron2 adds it to float32 numpy values)
    boxes = np.concatenate([np.asarray(d.boxes).reshape(-1, 4) for d in detections])
    boxes = (boxes + np.array([1, 1, 0, 0], dtype=boxes.dtype)).astype(np.float64)
    scores = np.concatenate([np.asarray(d.scores).reshape(-1) for d in detections]).astype(np.float64)
    labels = np.concatenate([np.asarray(d.labels, np.int64).reshape(-1) for d in detections])
    if round_like_detectron2:
        boxes = _round_half_even_like_format(boxes.ravel(), 1).reshape(-1, 4)
        scores = _round_half_even_like_format(scores, 3)
    for c, name in enumerate(class_names):
        gtb, gtd = [], []
        for g in ground_truth:
            m = np.asarray(g.labels) == c
            b = np.asarray(g.boxes, np.float64)[m].reshape(-1, 4) + np.array([1.0, 1.0, 0.0, 0.0])
            gtb.append(b)
            gtd.append(np.asarray(g.difficult, bool)[m])
        sel = labels == c
        aps, npos = _class_curve(img_of[sel], boxes[sel], scores[sel], gtb, gtd, thresholds, use_07_metric)
        for t, ap in zip(thresholds, aps):
            per_thr[t].append(ap * 100)
        result.npos[name] = npos
        if npos == 0:
            result.classes_without_gt.append(name)
        result.per_class[name] = {"AP": float(np.mean(aps) * 100), "AP50": aps[thresholds.index(0.5)] * 100,
                                  "AP75": aps[thresholds.index(0.75)] * 100}
    m_ap = {t: float(np.mean(v)) for t, v in per_thr.items()}
    result.AP = float(np.mean(list(m_ap.values())))
    result.AP50, result.AP75 = m_ap[0.5], m_ap[0.75]
    return result
