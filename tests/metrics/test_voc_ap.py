"""VOC AP: our evaluator vs an independent loop re-implementation of detectron2's voc_eval, and hand examples."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from cl_bench.errors import ClBenchError
from cl_bench.metrics.voc_ap import ImageDetections, evaluate_voc, voc_ap


# ---------------------------------------------------------------- independent reference (loops)
def ref_ap(rec: list[float], prec: list[float], use_07: bool) -> float:
    if use_07:
        total = 0.0
        for k in range(11):
            # detectron2 iterates np.arange(0.0, 1.1, 0.1), i.e. k * 0.1: 3 * 0.1 = 0.30000000000000004,
            # so a recall of exactly 0.3 (or 0.6, 0.7) does NOT reach that point. Kept on purpose.
            t = k * 0.1
            ps = [p for r, p in zip(rec, prec) if r >= t]
            total += (max(ps) if ps else 0.0) / 11.0
        return total
    mrec = [0.0, *rec, 1.0]
    mpre = [0.0, *prec, 0.0]
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


def ref_voc_eval(gts, dets, cls, thr, use_07):
    """gts: per image list of (xmin, ymin, xmax, ymax 1-based ints, cls, difficult).
    dets: list of (image index, score, xmin, ymin, xmax, ymax) already in detectron2's written form."""
    taken = {}
    npos = 0
    for i, objs in enumerate(gts):
        for j, o in enumerate(objs):
            if o[4] == cls:
                taken[(i, j)] = False
                npos += 0 if o[5] else 1
    mine = [d for d in dets if d[6] == cls]
    order = np.argsort(-np.array([d[1] for d in mine], dtype=np.float64)) if mine else []
    tp, fp = [], []
    for k in order:
        img, _, x0, y0, x1, y1, _ = mine[k]
        best, best_j = -np.inf, None
        for j, o in enumerate(gts[img]):
            if o[4] != cls:
                continue
            iw = max(min(o[2], x1) - max(o[0], x0) + 1.0, 0.0)
            ih = max(min(o[3], y1) - max(o[1], y0) + 1.0, 0.0)
            inter = iw * ih
            union = (x1 - x0 + 1.0) * (y1 - y0 + 1.0) + (o[2] - o[0] + 1.0) * (o[3] - o[1] + 1.0) - inter
            ov = inter / union
            if ov > best:
                best, best_j = ov, j
        if best > thr:
            if gts[img][best_j][5]:
                tp.append(0.0)
                fp.append(0.0)
            elif not taken[(img, best_j)]:
                taken[(img, best_j)] = True
                tp.append(1.0)
                fp.append(0.0)
            else:
                tp.append(0.0)
                fp.append(1.0)
        else:
            tp.append(0.0)
            fp.append(1.0)
    rec, prec, ctp, cfp = [], [], 0.0, 0.0
    for a, b in zip(tp, fp):
        ctp += a
        cfp += b
        rec.append(ctp / npos if npos else float("nan"))
        prec.append(ctp / max(ctp + cfp, np.finfo(np.float64).eps))
    return ref_ap(rec, prec, use_07)


def ref_evaluate(gts, dets, n_cls, use_07):
    aps = {t: [100 * ref_voc_eval(gts, dets, c, t / 100.0, use_07) for c in range(n_cls)] for t in range(50, 100, 5)}
    m = {t: float(np.mean(v)) for t, v in aps.items()}
    return float(np.mean(list(m.values()))), m[50], m[75]


# ---------------------------------------------------------------- random problems
def random_problem(seed: int, n_img: int = 25, n_cls: int = 3):
    rng = np.random.default_rng(seed)
    gt_objs, records, dets, det_lines = [], [], [], []
    for i in range(n_img):
        objs = []
        for _ in range(int(rng.integers(0, 5))):
            x0, y0 = int(rng.integers(1, 60)), int(rng.integers(1, 60))
            x1, y1 = x0 + int(rng.integers(0, 40)), y0 + int(rng.integers(0, 40))
            objs.append((x0, y0, x1, y1, int(rng.integers(0, n_cls)), bool(rng.uniform() < 0.2)))
        gt_objs.append(objs)
        records.append(SimpleNamespace(
            boxes=np.array([[o[0] - 1, o[1] - 1, o[2], o[3]] for o in objs], np.float32).reshape(-1, 4),
            labels=np.array([o[4] for o in objs], np.int64), difficult=np.array([o[5] for o in objs], bool)))
        boxes, scores, labels = [], [], []
        for o in objs:  # noisy copies (some duplicates), wrong classes, and background boxes
            for _ in range(int(rng.integers(0, 3))):
                jit = rng.normal(0, 3, 4)
                boxes.append([o[0] - 1 + jit[0], o[1] - 1 + jit[1], o[2] + jit[2], o[3] + jit[3]])
                scores.append(float(rng.choice([0.9, 0.5, rng.uniform()])))  # ties on purpose
                labels.append(o[4] if rng.uniform() < 0.85 else int(rng.integers(0, n_cls)))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 60, 2)
            boxes.append([x, y, x + rng.uniform(2, 30), y + rng.uniform(2, 30)])
            scores.append(float(rng.uniform()))
            labels.append(int(rng.integers(0, n_cls)))
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        s = np.asarray(scores, np.float32)
        dets.append(ImageDetections(b, s, np.asarray(labels, np.int64)))
        for bb, sc, lab in zip(b, s.tolist(), labels):  # detectron2's text round trip, float32 +1
            xmin, ymin, xmax, ymax = bb
            xmin += 1
            ymin += 1
            line = f"{i} {sc:.3f} {xmin:.1f} {ymin:.1f} {xmax:.1f} {ymax:.1f}".split()
            det_lines.append((int(line[0]), *(float(v) for v in line[1:]), lab))
    return gt_objs, records, dets, det_lines


@pytest.mark.parametrize("use_07", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_reference_voc_eval(seed: int, use_07: bool) -> None:
    gt_objs, records, dets, det_lines = random_problem(seed)
    ours = evaluate_voc(records, dets, ["a", "b", "c"], use_07)
    ref = ref_evaluate(gt_objs, det_lines, 3, use_07)
    np.testing.assert_allclose([ours.AP, ours.AP50, ours.AP75], ref, rtol=0, atol=1e-9)


def test_hand_worked_example() -> None:
    # one image, two GT (class 0), one difficult GT (class 0); three detections
    rec = SimpleNamespace(boxes=np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32),
                          labels=np.array([0, 0, 0]), difficult=np.array([False, False, True]))
    det = ImageDetections(
        np.array([[0, 0, 10, 10], [0, 0, 10, 10], [40, 40, 50, 50], [60, 60, 70, 70]], np.float32),
        np.array([0.9, 0.8, 0.7, 0.6], np.float32), np.array([0, 0, 0, 0]))
    # sorted: TP (gt0), FP (duplicate), ignored (difficult), FP (background); npos = 2
    # recall 0.5, 0.5, 0.5, 0.5; precision 1, .5, .5, 1/3 -> 11-point: 6 points (t<=0.5) at 1.0 -> 6/11
    r = evaluate_voc([rec], [det], ["x"], use_07_metric=True)
    assert r.AP50 == pytest.approx(100 * 6 / 11)
    r12 = evaluate_voc([rec], [det], ["x"], use_07_metric=False)
    assert r12.AP50 == pytest.approx(50.0)  # area: 0.5 recall at precision 1
    assert r.npos == {"x": 2}


def test_iou_strictly_greater_with_plus_one_convention() -> None:
    # GT 1-based (1,1)-(10,10): 100 px. Det covering columns 1..5 (1-based): IoU = 50/100 = 0.5 exactly
    rec = SimpleNamespace(boxes=np.array([[0, 0, 10, 10]], np.float32), labels=np.array([0]),
                          difficult=np.array([False]))
    det = ImageDetections(np.array([[0, 0, 5, 10]], np.float32), np.array([1.0]), np.array([0]))
    r = evaluate_voc([rec], [det], ["x"], use_07_metric=False)
    assert r.AP50 == 0.0  # 0.5 is not > 0.5
    det2 = ImageDetections(np.array([[0, 0, 6, 10]], np.float32), np.array([1.0]), np.array([0]))
    assert evaluate_voc([rec], [det2], ["x"], use_07_metric=False).AP50 == 100.0


def test_eleven_point_grid_quirk_of_detectron2() -> None:
    # recall exactly 0.3 with precision 1: points 0.0, 0.1, 0.2 count, "0.3" (= 0.30000000000000004) does not
    assert voc_ap(np.array([0.3]), np.array([1.0]), True) == pytest.approx(3 / 11)
    assert voc_ap(np.array([0.5]), np.array([1.0]), True) == pytest.approx(6 / 11)


def test_voc_ap_curves() -> None:
    rec, prec = np.array([0.2, 0.4, 0.4, 0.8]), np.array([1.0, 1.0, 0.66, 0.75])
    assert voc_ap(rec, prec, False) == pytest.approx(ref_ap(list(rec), list(prec), False))
    assert voc_ap(rec, prec, True) == pytest.approx(ref_ap(list(rec), list(prec), True))
    assert voc_ap(np.array([]), np.array([]), True) == 0.0


def test_no_detections_and_missing_class() -> None:
    rec = SimpleNamespace(boxes=np.array([[0, 0, 10, 10]], np.float32), labels=np.array([0]),
                          difficult=np.array([False]))
    r = evaluate_voc([rec], [ImageDetections.empty()], ["x", "y"], use_07_metric=True)
    assert r.AP == 0.0 and r.classes_without_gt == ["y"]


def test_bad_inputs() -> None:
    rec = SimpleNamespace(boxes=np.zeros((0, 4)), labels=np.zeros(0, int), difficult=np.zeros(0, bool))
    with pytest.raises(ClBenchError, match="one per image"):
        evaluate_voc([rec], [], ["x"], True)
    with pytest.raises(ClBenchError, match="no test images"):
        evaluate_voc([], [], ["x"], True)
    bad = ImageDetections(np.zeros((1, 4)), np.ones(1), np.array([3]))
    with pytest.raises(ClBenchError, match="outside"):
        evaluate_voc([rec], [bad], ["x"], True)
