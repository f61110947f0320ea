"""COCO instances JSON (read with pycocotools) -> DetectionRecords, detectron2's conventions.

Categories are sorted by id and mapped to contiguous indices (``category_ids[i]`` is class
``i``'s COCO id). Boxes ``[x, y, w, h]`` load as ``(x, y, x + w, y + h)``. Crowd regions are
kept with ``iscrowd`` set (trainers drop them; COCOeval ignores them). Annotations with a
non-positive width or height are dropped and counted (``degenerate_boxes``; detectron2
filters empty boxes too). Evaluation reads the JSON itself (``DetectionSplit.gt_json``).

Errors: anything :mod:`cl_bench.data.dense.coco_schema` refuses (wrong field types, non-finite or
negative-sized boxes, image sizes out of range, a ``file_name`` outside the image folder), an
annotation whose ``image_id`` is not in ``images`` or whose ``category_id`` is not in
``categories``, an image file that is missing, an empty ``images`` list.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from cl_bench.components import register
from cl_bench.data.data_root import need_root
from cl_bench.data.dense.types import DetectionData, DetectionRecord, DetectionSplit
from cl_bench.errors import ClBenchError
from cl_bench.specs import validate_params


def read_coco(json_path: Path) -> Any:
    """A pycocotools ``COCO`` object of a validated instances JSON (see :mod:`cl_bench.data.dense.coco_schema`);
    a missing, oversized, malformed or invalid file -> ClBenchError naming the file and field."""
    from pycocotools.coco import COCO

    from cl_bench.bounded_io import MAX_DATA_TEXT_BYTES, read_json
    from cl_bench.data.dense.coco_schema import validate_coco

    if not json_path.exists():
        raise ClBenchError(f"COCO annotation file {json_path} is missing")
    data = read_json(json_path, MAX_DATA_TEXT_BYTES, "COCO annotation file")
    validate_coco(data, str(json_path))
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco_split(
    json_path: Path, image_dir: Path, counters: dict[str, int] | None = None
) -> tuple[list[DetectionRecord], list[str], list[int]]:
    """(records in ``images`` order, class names, category ids) of one COCO instances file."""
    coco = read_coco(json_path)
    cats = sorted(coco.dataset.get("categories", []), key=lambda c: c["id"])
    if not cats:
        raise ClBenchError(f"{json_path}: no categories")
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    images = coco.dataset.get("images", [])
    if not images:
        raise ClBenchError(f"{json_path}: the 'images' list is empty: nothing to load")
    for ann in coco.dataset.get("annotations", []):
        if ann["image_id"] not in coco.imgs:
            raise ClBenchError(
                f"{json_path}: annotation id {ann.get('id')} points to image_id {ann['image_id']}, "
                "which is not in 'images'; the JSON is inconsistent"
            )
        if ann["category_id"] not in cat_index:
            raise ClBenchError(
                f"{json_path}: annotation id {ann.get('id')} has category_id {ann['category_id']}, "
                "which is not in 'categories'"
            )
    degenerate = 0
    records = []
    for img in images:
        path = image_dir / img["file_name"]  # a relative path inside image_dir (coco_schema)
        if not path.is_file():
            raise ClBenchError(f"image {path} is missing (listed in {json_path.name}); expected it under {image_dir}")
        boxes, labels, crowd, masks = [], [], [], []
        has_masks = True
        for ann in coco.imgToAnns.get(img["id"], []):
            x, y, w, h = (float(v) for v in ann["bbox"])  # finite, w, h >= 0 (coco_schema)
            if w <= 0 or h <= 0:
                degenerate += 1
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(cat_index[ann["category_id"]])
            crowd.append(bool(ann.get("iscrowd", 0)))
            seg = ann.get("segmentation")
            has_masks = has_masks and bool(seg)
            masks.append(seg)
        records.append(DetectionRecord(
            image_id=img["id"], file_name=path, height=int(img["height"]), width=int(img["width"]),
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64),
            difficult=np.zeros(len(labels), dtype=bool),
            iscrowd=np.asarray(crowd, dtype=bool),
            masks=masks if has_masks else None,
        ))
    if counters is not None:
        counters["degenerate_boxes"] = counters.get("degenerate_boxes", 0) + degenerate
    return records, [c["name"] for c in cats], [int(c["id"]) for c in cats]


# ----------------------------------------------------------------------------- dataset ``coco``


class CocoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = "coco"
    train_json: str = "annotations/instances_train2017.json"
    train_images: str = "train2017"
    test_json: str = "annotations/instances_val2017.json"
    test_images: str = "val2017"
    image_size: tuple[int, int] = (800, 800)  # nominal, for arch builders


def coco_data(name: str, root: Path, train_json: str, train_images: str, test_json: str, test_images: str,
               image_size: tuple[int, int], cache_images: bool, meta: dict[str, Any]) -> DetectionData:
    counters: dict[str, int] = {}
    tr, names, ids = load_coco_split(root / train_json, root / train_images, counters)
    te, names_te, ids_te = load_coco_split(root / test_json, root / test_images, counters)
    if (names, ids) != (names_te, ids_te):
        raise ClBenchError(f"{train_json} and {test_json} have different categories; they must match")
    test = DetectionSplit(te, cache_images=cache_images, gt_json=root / test_json)
    train = DetectionSplit(tr, cache_images=cache_images, gt_json=root / train_json)
    has_masks = all(r.masks is not None for r in tr + te)
    return DetectionData(name, train, test, names, metric="coco", has_masks=has_masks, category_ids=ids,
                         image_size=image_size, meta={**meta, **counters})


@register("dataset", "coco")
def load_coco(params: dict[str, Any] | None, data_root: Path | None) -> DetectionData:
    """COCO instances (80 categories, ids 1-90) via pycocotools; COCOeval bbox (+ segm with masks)."""
    p = validate_params(CocoParams, params, "dataset 'coco' params")
    layout = (f"expected DATA_ROOT/{p.root}/{{{p.train_json}, {p.test_json}, {p.train_images}/, "
              f"{p.test_images}/}}")
    root = need_root(data_root, "coco", layout) / p.root
    for rel in (p.train_json, p.test_json):
        if not (root / rel).is_file():
            raise ClBenchError(f"{root / rel} is missing; {layout}")
    return coco_data("coco", root, p.train_json, p.train_images, p.test_json, p.test_images,
                      tuple(p.image_size), False, {"root": str(root)})
