"""Dense-prediction dataset components: the embedded scenes twins and the real datasets.

Embedded (no download): ``scenes-voc``, ``scenes-coco``, ``scenes-cityscapes`` generate the
scenes world (:mod:`cl_bench.data.scenes`) ONCE into ``<cache>/generated/<kind>-<hash>/`` in
the real on-disk format (:mod:`cl_bench.data.scene_writers`) and then read it back through
the same loaders as the real data, so the twins exercise the real code paths.

Real (under ``--data-root`` / ``CLBENCH_DATA``, official layouts): ``voc`` (VOCdevkit;
VOC07+12 trainval -> VOC07 test by default), ``coco`` (instances_{train,val}2017.json +
image folders), ``cityscapes`` (leftImg8bit + gtFine labelIds).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cl_bench.cache import default_cache_dir
from cl_bench.components import register
from cl_bench.data.captions import BACKGROUND_WORDS
from cl_bench.data.cityscapes import (
    CITYSCAPES_CLASSES,
    LABEL_TO_TRAIN,
    THING_TRAIN_IDS,
    list_cityscapes_split,
    read_train_ids,
)
from cl_bench.data.coco import load_coco_split
from cl_bench.data.dense_types import DetectionData, DetectionSplit, SegmentationData, SegmentationSplit
from cl_bench.data.scene_writers import write_cityscapes, write_coco, write_voc
from cl_bench.data.scenes import CLUTTER, REGIONS, SHAPE_LABEL_IDS, SHAPES, generate_scenes
from cl_bench.data.voc import VOC_CLASSES, load_voc_split
from cl_bench.errors import ClBenchError
from cl_bench.specs import canonical_hash, validate_params

GENERATOR_VERSION = "scenes-v1"  # bump when the generator or a writer changes its output


class ScenesParams(BaseModel):
    """The world is a property of the task: ``seed`` here never depends on the run seed."""

    model_config = ConfigDict(extra="forbid")

    n_train: int = Field(default=300, ge=1)
    n_test: int = Field(default=100, ge=1)
    image_size: tuple[int, int] = (96, 96)
    seed: int = Field(default=0, ge=0)
    min_objects: int = Field(default=1, ge=1)
    max_objects: int = Field(default=4, ge=1)
    crowd_prob: float = Field(default=0.15, ge=0.0, le=1.0)
    difficult_area: int = Field(default=40, ge=0)  # VOC: fewer visible pixels -> difficult

    @field_validator("image_size", mode="before")
    @classmethod
    def _square(cls, v: Any) -> Any:
        return (v, v) if isinstance(v, int) else v

    @field_validator("image_size")
    @classmethod
    def _range(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not all(32 <= s <= 512 for s in v):
            raise ValueError("image_size sides must be within 32..512")
        return v


def generated_dir(kind: str, p: ScenesParams) -> Path:
    """``<cache>/generated/<kind>-<hash of the params and generator version>``."""
    key = canonical_hash({"kind": kind, "params": p.model_dump(mode="json"), "version": GENERATOR_VERSION})
    return default_cache_dir() / "generated" / f"{kind}-{key[:16]}"


def ensure_generated(kind: str, p: ScenesParams) -> Path:
    """Generate the tree once (under a lock, into a temp folder renamed at the end); return it."""
    final = generated_dir(kind, p)
    marker = final / "generator.json"
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if marker.is_file():
            return final
        tmp = final.parent / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        opts = {"min_objects": p.min_objects, "max_objects": max(p.max_objects, p.min_objects),
                "crowd_prob": p.crowd_prob}
        scenes = generate_scenes(p.n_train + p.n_test, p.seed, tuple(p.image_size), **opts)
        train, test = scenes[: p.n_train], scenes[p.n_train:]
        if kind == "voc":
            write_voc({"trainval": train, "test": test}, tmp, p.difficult_area)
        elif kind == "coco":
            write_coco({"train": train, "val": test}, tmp)
        else:
            write_cityscapes({"train": train, "val": test}, tmp)
        (tmp / "generator.json").write_text(json.dumps(
            {"kind": kind, "params": p.model_dump(mode="json"), "version": GENERATOR_VERSION}, indent=2))
        tmp.rename(final)
    return final


def _meta(kind: str, p: ScenesParams, root: Path) -> dict[str, Any]:
    return {"source": f"embedded scenes ({kind} format)", "generated_at": str(root),
            "generator": GENERATOR_VERSION, **p.model_dump(mode="json")}


@register("dataset", "scenes-voc")
def load_scenes_voc(params: dict[str, Any] | None, data_root: Path | None) -> DetectionData:
    """Scenes as a VOC2007 tree (trainval / test), read by the VOC loader; VOC07 11-point metric."""
    p = validate_params(ScenesParams, params, "dataset 'scenes-voc' params")
    voc = ensure_generated("voc", p) / "VOCdevkit" / "VOC2007"
    counters: dict[str, int] = {}
    train = DetectionSplit(load_voc_split(voc, "trainval", SHAPES, counters), cache_images=True)
    test = DetectionSplit(load_voc_split(voc, "test", SHAPES, counters), cache_images=True)
    return DetectionData("scenes-voc", train, test, list(SHAPES), metric="voc", use_07_metric=True,
                         image_size=tuple(p.image_size), meta={**_meta("voc", p, voc), **counters})


@register("dataset", "scenes-coco")
def load_scenes_coco(params: dict[str, Any] | None, data_root: Path | None) -> DetectionData:
    """Scenes as COCO instances (boxes + masks, crowds), read with pycocotools; COCOeval bbox/segm."""
    p = validate_params(ScenesParams, params, "dataset 'scenes-coco' params")
    root = ensure_generated("coco", p)
    return _coco_data("scenes-coco", root, "annotations/instances_train2017.json", "train2017",
                      "annotations/instances_val2017.json", "val2017", tuple(p.image_size), True,
                      _meta("coco", p, root))


@register("dataset", "scenes-cityscapes")
def load_scenes_cityscapes(params: dict[str, Any] | None, data_root: Path | None) -> SegmentationData:
    """Scenes as a Cityscapes tree (labelIds PNGs), mapped to the 19 trainIds by the Cityscapes loader."""
    p = validate_params(ScenesParams, params, "dataset 'scenes-cityscapes' params")
    root = ensure_generated("cityscapes", p)
    data = _cityscapes_data("scenes-cityscapes", root, "train", "val", tuple(p.image_size), True,
                            _meta("cityscapes", p, root))
    data.prompt_names = scene_class_words()
    return data


def scene_class_words() -> list[str]:
    """Per Cityscapes trainId, the word the scenes' captions use for what is painted with it (the shape
    for an object class, the caption word for a background region, the clutter kind for pole);
    a class the scenes never paint keeps its Cityscapes name. Language-guided heads prompt with these."""
    words = list(CITYSCAPES_CLASSES)
    painted = {**{lid: shape for shape, lid in SHAPE_LABEL_IDS.items()},
               **{lid: BACKGROUND_WORDS.get(name, name) for name, (lid, _) in REGIONS.items()},
               **{lid: kind for kind, (lid, _) in CLUTTER.items()}}
    for lid, word in painted.items():
        if lid in LABEL_TO_TRAIN:
            words[LABEL_TO_TRAIN[lid]] = word
    return words


# ----------------------------------------------------------------------------- real data


def _need_root(data_root: Path | None, name: str, layout: str) -> Path:
    if data_root is None:
        raise ClBenchError(f"dataset '{name}' needs real data: pass --data-root (or set CLBENCH_DATA); {layout}")
    return data_root


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
    root = _need_root(data_root, "voc", VOC_LAYOUT.format(root=p.root)) / p.root
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


class CocoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = "coco"
    train_json: str = "annotations/instances_train2017.json"
    train_images: str = "train2017"
    test_json: str = "annotations/instances_val2017.json"
    test_images: str = "val2017"
    image_size: tuple[int, int] = (800, 800)  # nominal, for arch builders


def _coco_data(name: str, root: Path, train_json: str, train_images: str, test_json: str, test_images: str,
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
    root = _need_root(data_root, "coco", layout) / p.root
    for rel in (p.train_json, p.test_json):
        if not (root / rel).is_file():
            raise ClBenchError(f"{root / rel} is missing; {layout}")
    return _coco_data("coco", root, p.train_json, p.train_images, p.test_json, p.test_images,
                      tuple(p.image_size), False, {"root": str(root)})


class CityscapesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = "cityscapes"
    train_split: str = "train"
    test_split: str = "val"
    image_size: tuple[int, int] = (1024, 2048)  # nominal, for arch builders


def _cityscapes_data(name: str, root: Path, train_split: str, test_split: str, image_size: tuple[int, int],
                     cache_images: bool, meta: dict[str, Any]) -> SegmentationData:
    splits = []
    for split in (train_split, test_split):
        images, labels = list_cityscapes_split(root, split)
        splits.append(SegmentationSplit(images, labels, read_train_ids, len(CITYSCAPES_CLASSES),
                                        thing_classes=THING_TRAIN_IDS, cache_images=cache_images, tag=split))
    return SegmentationData(name, splits[0], splits[1], list(CITYSCAPES_CLASSES), image_size=image_size,
                            meta={**meta, "train_split": train_split, "test_split": test_split})


@register("dataset", "cityscapes")
def load_cityscapes(params: dict[str, Any] | None, data_root: Path | None) -> SegmentationData:
    """Cityscapes fine annotations: labelIds mapped to the 19 trainIds (others 255)."""
    p = validate_params(CityscapesParams, params, "dataset 'cityscapes' params")
    layout = (f"expected DATA_ROOT/{p.root}/leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
              f"DATA_ROOT/{p.root}/gtFine/<split>/<city>/*_gtFine_labelIds.png")
    root = _need_root(data_root, "cityscapes", layout) / p.root
    if not root.is_dir():
        raise ClBenchError(f"{root} is missing; {layout}")
    return _cityscapes_data("cityscapes", root, p.train_split, p.test_split, tuple(p.image_size), False,
                            {"root": str(root)})
