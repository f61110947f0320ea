"""PASCAL VOC detection in its official layout (detectron2's ``load_voc_instances`` conventions).

``VOCdevkit/VOC<year>/{Annotations/<id>.xml, ImageSets/Main/<set>.txt, JPEGImages/<id>.jpg}``.
Boxes are 1-based inclusive integers in the XML; they load as ``(xmin - 1, ymin - 1, xmax,
ymax)`` (only the minima shift). ``difficult`` objects are kept (for training) and flagged
(the evaluator ignores them). An object without ``difficult``/``truncated`` counts as 0 (some
VOC2012 files omit them; the number is reported). A missing ``bndbox``/``name``, an unknown
class, a box with ``xmax < xmin``, a missing image or an empty image set is a ClBenchError.
XML is parsed with defusedxml.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from xml.etree.ElementTree import ParseError

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator

from cl_bench.components import register
from cl_bench.bounded_io import MAX_DATA_TEXT_BYTES, read_bytes, read_text
from cl_bench.data.data_root import need_root
from cl_bench.data.dense.types import MAX_IMAGE_SIDE, DetectionData, DetectionRecord, DetectionSplit
from cl_bench.data.safe_paths import safe_relpath
from cl_bench.errors import ClBenchError
from cl_bench.specs import validate_params

VOC_CLASSES: list[str] = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]


def _text(node: object, tag: str, where: str) -> str:
    child = node.find(tag)  # type: ignore[attr-defined]
    if child is None or child.text is None or not child.text.strip():
        raise ClBenchError(f"{where}: missing <{tag}>; every VOC <object> needs name and bndbox")
    return child.text.strip()


def _number(node: object, tag: str, where: str) -> float:
    text = _text(node, tag, where)
    try:
        return float(text)
    except ValueError:
        raise ClBenchError(f"{where}: <{tag}> is {text!r}, not a number") from None


class VocSize(BaseModel):
    """``<size>``: whole pixels (XML text, so numbers come as strings)."""

    model_config = ConfigDict(extra="ignore")
    width: int = Field(ge=1, le=MAX_IMAGE_SIDE)
    height: int = Field(ge=1, le=MAX_IMAGE_SIDE)


class VocObject(BaseModel):
    """One ``<object>``: its class, finite 1-based box corners, 0/1 flags."""

    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)
    xmin: FiniteFloat
    ymin: FiniteFloat
    xmax: FiniteFloat
    ymax: FiniteFloat
    difficult: Literal[0, 1] | None = None
    truncated: Literal[0, 1] | None = None


def _flag(text: str | None) -> int | str | None:
    """A 0/1 flag's text as a number when it is one ("1", "0", "1.0"), else as is (the schema rejects it)."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else text


def parse_voc_xml(path: Path, class_names: Sequence[str], counters: dict[str, int] | None = None) -> dict:
    """One annotation file -> dict(height, width, boxes [K,4] 0-based, labels, difficult, truncated)."""
    from defusedxml import DefusedXmlException
    from defusedxml import ElementTree as SafeET

    if not path.exists():
        raise ClBenchError(f"annotation {path} is missing; expected VOC<year>/Annotations/<id>.xml")
    try:
        root = SafeET.fromstring(read_bytes(path, MAX_DATA_TEXT_BYTES, "annotation"))
    except (ParseError, DefusedXmlException) as e:  # malformed XML, or entities/DTDs defusedxml refuses
        raise ClBenchError(f"annotation {path} is not valid VOC XML ({e.__class__.__name__}: {e})") from None
    size = root.find("size")
    if size is None:
        raise ClBenchError(f"{path}: missing <size>; VOC XML needs <size><width/><height/></size>")
    dims = validate_params(VocSize, {t: _text(size, t, f"{path} <size>") for t in ("width", "height")},
                           f"{path} <size>")
    height, width = dims.height, dims.width
    index = {c: i for i, c in enumerate(class_names)}
    boxes, labels, difficult, truncated = [], [], [], []
    for k, obj in enumerate(root.findall("object")):
        where = f"{path} object #{k + 1}"
        name = _text(obj, "name", where)
        if name not in index:
            raise ClBenchError(f"{where}: class {name!r} is not one of this dataset's classes ({', '.join(class_names)})")
        bnd = obj.find("bndbox")
        if bnd is None:
            raise ClBenchError(f"{where} ({name}): missing <bndbox>; every VOC <object> needs name and bndbox")
        raw = {t: _number(bnd, t, where) for t in ("xmin", "ymin", "xmax", "ymax")}
        raw.update({t: _flag(node.text) for t in ("difficult", "truncated") if (node := obj.find(t)) is not None})
        o = validate_params(VocObject, {"name": name, **raw}, f"{where} ({name})")
        x0, y0, x1, y1 = o.xmin, o.ymin, o.xmax, o.ymax
        if x1 < x0 or y1 < y0:
            raise ClBenchError(f"{where} ({name}): bndbox has xmax < xmin or ymax < ymin ({x0}, {y0}, {x1}, {y1})")
        flags = []
        for tag in ("difficult", "truncated"):
            value = getattr(o, tag)
            if value is None:
                if counters is not None:
                    counters[f"objects_without_{tag}"] = counters.get(f"objects_without_{tag}", 0) + 1
            flags.append(bool(value))
        boxes.append([x0 - 1.0, y0 - 1.0, x1, y1])
        labels.append(index[name])
        difficult.append(flags[0])
        truncated.append(flags[1])
    return {
        "height": height, "width": width,
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, dtype=np.int64),
        "difficult": np.asarray(difficult, dtype=bool),
        "truncated": np.asarray(truncated, dtype=bool),
    }


def read_image_set(voc_dir: Path, image_set: str) -> list[str]:
    path = voc_dir / "ImageSets" / "Main" / f"{image_set}.txt"
    if not path.is_file():
        raise ClBenchError(f"image set {path} is missing; expected VOC<year>/ImageSets/Main/{image_set}.txt")
    text = read_text(path, MAX_DATA_TEXT_BYTES, "image set")
    ids = [safe_relpath(line.split()[0], f"{path}") for line in text.splitlines() if line.strip()]
    if not ids:
        raise ClBenchError(f"image set {path} is empty: no images to load")
    return ids


def load_voc_split(
    voc_dir: Path,
    image_set: str,
    class_names: Sequence[str] = VOC_CLASSES,
    counters: dict[str, int] | None = None,
) -> list[DetectionRecord]:
    """All images of ``VOC<year>/ImageSets/Main/<image_set>.txt`` as DetectionRecords, in file order."""
    records = []
    for image_id in read_image_set(voc_dir, image_set):
        ann = parse_voc_xml(voc_dir / "Annotations" / f"{image_id}.xml", class_names, counters)
        jpg = voc_dir / "JPEGImages" / f"{image_id}.jpg"
        if not jpg.is_file():
            raise ClBenchError(f"image {jpg} is missing (listed in {image_set}.txt); expected VOC<year>/JPEGImages/<id>.jpg")
        records.append(DetectionRecord(
            image_id=image_id, file_name=jpg, height=ann["height"], width=ann["width"],
            boxes=ann["boxes"], labels=ann["labels"], difficult=ann["difficult"],
            iscrowd=np.zeros(len(ann["labels"]), dtype=bool), truncated=ann["truncated"],
        ))
    return records


# ----------------------------------------------------------------------------- dataset ``voc``


class VocParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = "VOCdevkit"
    train_sets: list[str] = Field(default_factory=lambda: ["2007/trainval", "2012/trainval"], min_length=1)
    test_set: str = "2007/test"
    image_size: tuple[int, int] = (800, 800)  # nominal, for arch builders

    @field_validator("train_sets", "test_set")
    @classmethod
    def _year_set(cls, v: Any) -> Any:
        for item in [v] if isinstance(v, str) else v:
            year, _, name = item.partition("/")
            if not (year.isdigit() and name):
                raise ValueError(f"{item!r} must look like '2007/trainval'")
        return v


VOC_LAYOUT = "expected DATA_ROOT/{root}/VOC<year>/{{Annotations/<id>.xml, ImageSets/Main/<set>.txt, JPEGImages/<id>.jpg}}"


@register("dataset", "voc")
def load_voc(params: dict[str, Any] | None, data_root: Path | None) -> DetectionData:
    """PASCAL VOC (20 classes); AP with the 11-point metric when the test set is VOC2007."""
    p = validate_params(VocParams, params, "dataset 'voc' params")
    root = need_root(data_root, "voc", VOC_LAYOUT.format(root=p.root)) / p.root
    counters: dict[str, int] = {}

    def records(item: str) -> list:
        year, _, image_set = item.partition("/")
        voc_dir = root / f"VOC{year}"
        if not voc_dir.is_dir():
            raise ClBenchError(f"{voc_dir} is missing; {VOC_LAYOUT.format(root=p.root)}")
        return load_voc_split(voc_dir, image_set, VOC_CLASSES, counters)

    train = DetectionSplit([r for item in p.train_sets for r in records(item)])
    test = DetectionSplit(records(p.test_set))
    return DetectionData("voc", train, test, list(VOC_CLASSES), metric="voc",
                         use_07_metric=p.test_set.startswith("2007/"), image_size=tuple(p.image_size),
                         meta={"root": str(root), "train_sets": p.train_sets, "test_set": p.test_set, **counters})
