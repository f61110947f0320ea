"""COCO metrics: our wrapper equals pycocotools' COCOeval run by hand on the same detections."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cl_bench.data.dense.coco import load_coco_split
from cl_bench.data.scenes.writers import write_coco
from cl_bench.data.scenes.world import generate_scenes
from cl_bench.errors import ClBenchError
from cl_bench.metrics.coco_eval import coco_evaluate, detections_to_results, records_to_coco
from cl_bench.metrics.voc_ap import ImageDetections


@pytest.fixture(scope="module")
def coco_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    scenes = generate_scenes(40, seed=5, size=(64, 80), crowd_prob=0.3)
    write_coco({"train": scenes[:10], "val": scenes[10:]}, root)
    return root


def noisy_detections(records, seed: int, with_masks: bool):
    rng = np.random.default_rng(seed)
    dets, masks = [], []
    for r in records:
        boxes, scores, labels, ms = [], [], [], []
        gt_masks = r.instance_masks() if with_masks else None
        for k, (b, c) in enumerate(zip(r.boxes, r.labels)):
            if rng.uniform() < 0.15:
                continue  # missed
            boxes.append(b + rng.normal(0, 1.5, 4))
            scores.append(rng.uniform(0.3, 1.0))
            labels.append(c if rng.uniform() < 0.9 else (c + 1) % 6)
            if with_masks:
                m = gt_masks[k].astype(bool)
                ms.append(np.roll(m, int(rng.integers(-2, 3)), axis=1))
        for _ in range(int(rng.integers(0, 3))):  # false positives
            x, y = rng.uniform(0, 50, 2)
            boxes.append([x, y, x + rng.uniform(3, 20), y + rng.uniform(3, 20)])
            scores.append(rng.uniform(0, 0.6))
            labels.append(int(rng.integers(0, 6)))
            if with_masks:
                m = np.zeros((r.height, r.width), bool)
                m[int(y): int(y) + 5, int(x): int(x) + 5] = True
                ms.append(m)
        dets.append(ImageDetections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                                    np.asarray(labels, np.int64)))
        masks.append(np.asarray(ms, bool).reshape(-1, r.height, r.width))
    return dets, masks


def reference(gt_json: Path, results: list[dict], iou_type: str) -> list[float]:
    """pycocotools by hand: our own results list built independently from the same arrays."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        dt = gt.loadRes(json.loads(json.dumps(results)))
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) * 100 for v in ev.stats[:6]]


def hand_results(records, dets, cat_ids, masks=None) -> list[dict]:
    out = []
    for i, (r, d) in enumerate(zip(records, dets)):
        for j in range(len(d.labels)):
            x0, y0, x1, y1 = (float(v) for v in d.boxes[j])
            res = {"image_id": r.image_id, "category_id": cat_ids[int(d.labels[j])],
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(d.scores[j])}
            if masks is not None:
                rle = mask_utils.encode(np.asfortranarray(masks[i][j].astype(np.uint8)))
                res["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"].decode()}
            out.append(res)
    return out


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_equals_pycocotools(coco_tree: Path, iou_type: str) -> None:
    gt_json = coco_tree / "annotations" / "instances_val2017.json"
    records, names, cat_ids = load_coco_split(gt_json, coco_tree / "val2017")
    assert cat_ids == [1, 2, 4, 7, 9, 13]  # non-contiguous ids survive the contiguous mapping
    dets, masks = noisy_detections(records, seed=1, with_masks=iou_type == "segm")
    m = masks if iou_type == "segm" else None
    ours, extras = coco_evaluate(gt_json, detections_to_results([r.image_id for r in records], dets, cat_ids, m),
                                 iou_type)
    ref = reference(gt_json, hand_results(records, dets, cat_ids, m), iou_type)
    got = [ours[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    np.testing.assert_allclose([-100.0 if v is None else v for v in got], ref, atol=1e-9)
    assert 5 < ours["AP"] < 95
    assert set(extras["per_class"]) == set(names)


def test_perfect_detections_score_100(coco_tree: Path) -> None:
    gt_json = coco_tree / "annotations" / "instances_val2017.json"
    records, _, cat_ids = load_coco_split(gt_json, coco_tree / "val2017")
    dets = [ImageDetections(r.boxes[~r.iscrowd], np.ones((~r.iscrowd).sum(), np.float32), r.labels[~r.iscrowd])
            for r in records]
    ours, _ = coco_evaluate(gt_json, detections_to_results([r.image_id for r in records], dets, cat_ids))
    assert ours["AP"] == pytest.approx(100.0) and ours["AP50"] == pytest.approx(100.0)


def test_records_to_coco_matches_file(coco_tree: Path) -> None:
    """GT rebuilt from loaded records (what non-COCO data uses) scores the same boxes identically."""
    gt_json = coco_tree / "annotations" / "instances_val2017.json"
    records, names, cat_ids = load_coco_split(gt_json, coco_tree / "val2017")
    dets, _ = noisy_detections(records, seed=2, with_masks=False)
    res = detections_to_results([r.image_id for r in records], dets, cat_ids)
    from_file, _ = coco_evaluate(gt_json, res)
    rebuilt = records_to_coco(records, names, cat_ids)
    from_records, _ = coco_evaluate(rebuilt, res)
    # areas differ (mask area vs box area) -> only the all-area numbers must agree
    for k in ("AP", "AP50", "AP75"):
        assert from_records[k] == pytest.approx(from_file[k], abs=1e-9)


def test_empty_and_bad_results(coco_tree: Path) -> None:
    gt_json = coco_tree / "annotations" / "instances_val2017.json"
    m, e = coco_evaluate(gt_json, [])
    assert m["AP"] == 0.0 and e["no_detections"]
    with pytest.raises(ClBenchError, match="not in the ground truth"):
        coco_evaluate(gt_json, [{"image_id": 10**9, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(ClBenchError, match="outside"):
        detections_to_results([1], [ImageDetections(np.zeros((1, 4)), np.ones(1), np.array([9]))], [1, 2])


def test_ground_truth_without_iscrowd_or_area_evaluates_as_coco_reads_it(coco_tree: Path) -> None:
    """Absent ``iscrowd`` means 0 and absent ``area`` the box area: the same numbers as pycocotools
    on a file that states those values explicitly (pycocotools alone crashes on the bare file)."""
    gt_json = coco_tree / "annotations" / "instances_val2017.json"
    records, _, cat_ids = load_coco_split(gt_json, coco_tree / "val2017")
    dets, _ = noisy_detections(records, seed=3, with_masks=False)
    results = detections_to_results([r.image_id for r in records], dets, cat_ids)
    doc = json.loads(gt_json.read_text())
    explicit = json.loads(json.dumps(doc))
    bare = json.loads(json.dumps(doc))
    n_plain = 0
    for e_ann, b_ann in zip(explicit["annotations"], bare["annotations"]):
        if not e_ann["iscrowd"]:
            del b_ann["iscrowd"]
            n_plain += 1
        e_ann["area"] = e_ann["bbox"][2] * e_ann["bbox"][3]
        del b_ann["area"]
    assert 0 < n_plain < len(bare["annotations"])  # crowd regions keep their flag
    explicit_path, bare_path = coco_tree / "explicit.json", coco_tree / "bare.json"
    explicit_path.write_text(json.dumps(explicit))
    bare_path.write_text(json.dumps(bare))
    with pytest.raises(KeyError):  # the crash this guards against
        reference(bare_path, hand_results(records, dets, cat_ids), "bbox")
    ours, extras = coco_evaluate(bare_path, results)
    ref = reference(explicit_path, hand_results(records, dets, cat_ids), "bbox")
    got = [ours[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    np.testing.assert_allclose([-100.0 if v is None else v for v in got], ref, atol=1e-9)
    assert extras["filled"] == {"iscrowd": n_plain, "area": len(bare["annotations"])}
