"""Evaluation time on 5,000 synthetic images' detections: our VOC evaluator and COCO wrapper vs pycocotools.

    python benchmarks/dense_eval.py [--images 5000] [--append]

Ground truth: 1-8 boxes per image over 6 classes (some difficult); detections: noisy copies
of the ground truth, wrong classes and background boxes, up to ~40 per image. Timed (one
thread, best of ``--repeat``):

- ``voc``: cl_bench.metrics.voc_ap.evaluate_voc (10 IoU thresholds, 11-point, detectron2
  rounding included);
- ``coco-wrapper``: cl_bench.metrics.coco_eval (arrays -> results dicts -> COCOeval bbox);
- ``pycocotools``: COCO.loadRes + COCOeval evaluate/accumulate/summarize on a prepared results
  list (the peer; the wrapper's cost beyond it is the conversion).
``--append`` adds a row to benchmarks/RESULTS.md (section "dense_eval").
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from cl_bench.metrics.coco_eval import coco_evaluate, coco_from_dict, detections_to_results
from cl_bench.metrics.voc_ap import ImageDetections, evaluate_voc

CLASSES = ["circle", "square", "triangle", "star", "cross", "diamond"]


def synthetic(n_images: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    records, dets = [], []
    for i in range(n_images):
        k = int(rng.integers(1, 9))
        xy = rng.uniform(0, 400, (k, 2))
        wh = rng.uniform(8, 200, (k, 2))
        boxes = np.round(np.concatenate([xy, xy + wh], 1)).astype(np.float32)
        labels = rng.integers(0, len(CLASSES), k)
        records.append(SimpleNamespace(image_id=i + 1, boxes=boxes, labels=labels, difficult=rng.uniform(size=k) < 0.1,
                                       iscrowd=np.zeros(k, bool), height=640, width=640, file_name=f"{i}.jpg"))
        reps = rng.integers(1, 4, k)
        b = np.repeat(boxes, reps, 0) + rng.normal(0, 6, (reps.sum(), 4))
        lab = np.repeat(labels, reps)
        flip = rng.uniform(size=len(lab)) < 0.1
        lab[flip] = rng.integers(0, len(CLASSES), flip.sum())
        n_bg = int(rng.integers(5, 20))
        bxy = rng.uniform(0, 500, (n_bg, 2))
        bg = np.concatenate([bxy, bxy + rng.uniform(5, 100, (n_bg, 2))], 1)
        dets.append(ImageDetections(np.concatenate([b, bg]).astype(np.float32),
                                    rng.uniform(size=len(lab) + n_bg).astype(np.float32),
                                    np.concatenate([lab, rng.integers(0, len(CLASSES), n_bg)])))
    return records, dets


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    records, dets = synthetic(args.images)
    n_dets = sum(len(d.labels) for d in dets)
    from cl_bench.metrics.coco_eval import records_to_coco

    gt_doc = records_to_coco(records, CLASSES, list(range(1, 7)))
    gt = coco_from_dict(gt_doc)
    ids = [r.image_id for r in records]
    prepared = detections_to_results(ids, dets, list(range(1, 7)))

    t_voc, voc = best_of(lambda: evaluate_voc(records, dets, CLASSES, use_07_metric=True), args.repeat)
    t_wrap, (cm, _) = best_of(lambda: coco_evaluate(gt, detections_to_results(ids, dets, list(range(1, 7)))),
                              args.repeat)

    def raw() -> float:
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(copy.deepcopy(prepared)), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return float(ev.stats[0])

    t_raw, raw_ap = best_of(raw, args.repeat)
    assert abs(raw_ap * 100 - cm["AP"]) < 1e-9
    lines = [
        f"images {args.images}, detections {n_dets}, classes {len(CLASSES)}, 1 thread, best of {args.repeat}",
        f"voc (ours, 10 thresholds, 07 metric): {t_voc:.2f} s  (AP {voc.AP:.2f}, AP50 {voc.AP50:.2f})",
        f"coco wrapper (ours -> COCOeval):      {t_wrap:.2f} s  (AP {cm['AP']:.2f})",
        f"pycocotools COCOeval (peer):          {t_raw:.2f} s",
        f"ratios: voc / pycocotools = {t_voc / t_raw:.2f}; wrapper / pycocotools = {t_wrap / t_raw:.2f}",
    ]
    print("\n".join(lines))
    if args.append:
        path = Path(__file__).with_name("RESULTS.md")
        head = "" if path.exists() else "# Benchmark results\n"
        with path.open("a") as f:
            f.write(f"{head}\n## dense_eval ({time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
                    f"python {platform.python_version()})\n\n```\n" + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
