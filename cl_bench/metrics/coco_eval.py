"""COCO detection / instance-segmentation AP through pycocotools' ``COCOeval`` (no re-implementation).

``coco_evaluate(gt, results, "bbox"|"segm")`` runs evaluate / accumulate / summarize and
returns ``stats[0..5]`` as AP, AP50, AP75, APs, APm, APl (×100; None — undefined, stored as
null — where pycocotools says -1, i.e. no ground truth in that area range) plus per-category AP
(``precision[:, :, k, area=all, maxDets=100]``, entries > -1 averaged, as detectron2's
COCOEvaluator does). Results are COCO results dicts (``image_id, category_id, bbox [x, y, w,
h] | segmentation (RLE), score``); :func:`detections_to_results` builds them from per-image
arrays (xyxy boxes -> ``[x0, y0, x1 - x0, y1 - y0]``, contiguous labels -> category ids).

An empty results list (the model predicted nothing) scores 0 for every metric (pycocotools
itself cannot load an empty results list) and says so in ``extras['no_detections']``.

Ground truth whose annotations lack ``iscrowd`` (optional in hand-made or converted COCO files;
pycocotools' ``evaluateImg`` indexes it and would crash after training) is read as
``iscrowd = 0``, COCO's meaning of an absent flag; a missing ``area`` is the box area ``w * h``
(as detectron2's ``convert_to_coco_dict`` writes for boxes). How many were filled is in
``extras['filled']``.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cl_bench.data.dense.coco import read_coco
from cl_bench.errors import ClBenchError
from cl_bench.metrics.voc_ap import ImageDetections

STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_from_dict(doc: dict[str, Any]) -> Any:
    """A pycocotools ``COCO`` built from an in-memory instances dict."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = copy.deepcopy(doc)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def records_to_coco(
    records: Sequence[Any], class_names: Sequence[str], category_ids: Sequence[int]
) -> dict[str, Any]:
    """A COCO instances dict from DetectionRecords (for data whose ground truth is not COCO JSON).

    ``area`` is the box area; difficult objects become ``iscrowd=1`` (ignored, like VOC).
    """
    images, anns = [], []
    for r in records:
        images.append({"id": r.image_id, "file_name": Path(r.file_name).name, "height": r.height, "width": r.width})
        for b, c, d, cr in zip(r.boxes.tolist(), r.labels.tolist(), r.difficult.tolist(), r.iscrowd.tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": r.image_id, "category_id": int(category_ids[c]),
                         "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": int(d or cr)})
    cats = [{"id": int(i), "name": n} for i, n in zip(category_ids, class_names)]
    return {"images": images, "annotations": anns, "categories": cats}


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def detections_to_results(
    image_ids: Sequence[Any],
    detections: Sequence[ImageDetections],
    category_ids: Sequence[int],
    masks: Sequence[np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """COCO results dicts; ``masks[i]``: bool [N_i, H, W] instance masks for ``segm``."""
    if len(image_ids) != len(detections):
        raise ClBenchError(f"{len(detections)} detection lists for {len(image_ids)} images")
    out = []
    for k, (img, det) in enumerate(zip(image_ids, detections)):
        boxes = np.asarray(det.boxes, np.float64).reshape(-1, 4)
        for j, (b, s, c) in enumerate(zip(boxes.tolist(), np.asarray(det.scores).tolist(), det.labels.tolist())):
            if not 0 <= c < len(category_ids):
                raise ClBenchError(f"image {img}: predicted class {c} outside 0..{len(category_ids) - 1}")
            res = {"image_id": img, "category_id": int(category_ids[c]),
                   "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)}
            if masks is not None:
                res["segmentation"] = _rle(masks[k][j])
            out.append(res)
    return out


def coco_evaluate(
    gt: Any, results: list[dict[str, Any]], iou_type: str = "bbox", img_ids: Sequence[Any] | None = None
) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics AP/AP50/AP75/APs/APm/APl ×100, extras with per-category AP and raw stats).

    ``img_ids``: evaluate only these images of the ground truth (COCOeval's ``params.imgIds``, as
    detectron2's COCOEvaluator does for a subset); None: all of them."""
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be bbox or segm, not {iou_type!r}")
    coco_gt = read_coco(Path(gt)) if isinstance(gt, (str, Path)) else coco_from_dict(gt) if isinstance(gt, dict) else gt
    if not coco_gt.getImgIds():
        raise ClBenchError("the COCO ground truth has no images: nothing to evaluate")
    filled = fill_optional_fields(coco_gt)
    names = {c["id"]: c["name"] for c in coco_gt.dataset["categories"]}
    if not results:
        metrics = {k: 0.0 for k in STAT_NAMES}
        return metrics, {"no_detections": True, "per_class": {n: 0.0 for n in names.values()}}
    known = set(coco_gt.getImgIds())
    stray = {r["image_id"] for r in results} - known
    if stray:
        raise ClBenchError(f"{len(stray)} result image ids are not in the ground truth (e.g. {sorted(stray, key=str)[:3]})")
    with contextlib.redirect_stdout(io.StringIO()) as log:
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) for v in ev.stats]
    # -1 means "no ground truth in this area range": undefined (detectron2 reports NaN; a result
    # never holds a non-finite number, see cl_bench.finite)
    metrics = {k: stats[i] * 100 if stats[i] >= 0 else None for i, k in enumerate(STAT_NAMES)}
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[names[cat_id]] = float(np.mean(p) * 100) if p.size else float("nan")
    return metrics, {"per_class": per_class, "stats": stats, "summary": log.getvalue(),
                     **({"filled": filled} if any(filled.values()) else {})}


def fill_optional_fields(coco_gt: Any) -> dict[str, int]:
    """Give every ground-truth annotation ``iscrowd`` (0) and ``area`` (box w*h) where absent."""
    filled = {"iscrowd": 0, "area": 0}
    for ann in coco_gt.dataset.get("annotations", []):  # the same dicts as coco_gt.anns
        if "iscrowd" not in ann:
            ann["iscrowd"] = 0
            filled["iscrowd"] += 1
        if "area" not in ann:
            if "bbox" not in ann:
                raise ClBenchError(f"COCO ground-truth annotation id {ann.get('id')} has neither 'area' nor 'bbox'")
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
            filled["area"] += 1
    return filled
