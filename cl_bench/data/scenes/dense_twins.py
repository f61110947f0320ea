"""The embedded dense-prediction twins: ``scenes-voc``, ``scenes-coco``, ``scenes-cityscapes``.

Embedded (no download): ``scenes-voc``, ``scenes-coco``, ``scenes-cityscapes`` generate the
scenes world (:mod:`cl_bench.data.scenes.world`) ONCE into ``<cache>/generated/<kind>-<hash>/`` in
the real on-disk format (:mod:`cl_bench.data.scenes.writers`) and then read it back through
the same loaders as the real data (:mod:`cl_bench.data.dense`), so the twins exercise the real code
paths.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import Field, field_validator

from cl_bench.cache import default_cache_dir
from cl_bench.components import register
from cl_bench.data.dense.cityscapes import CITYSCAPES_CLASSES, LABEL_TO_TRAIN, cityscapes_data
from cl_bench.data.dense.coco import coco_data
from cl_bench.data.dense.types import DetectionData, DetectionSplit, SegmentationData
from cl_bench.data.scenes.writers import write_cityscapes, write_coco, write_voc
from cl_bench.data.scenes.captions import BACKGROUND_WORDS
from cl_bench.data.scenes.world import CLUTTER, REGIONS, SHAPE_LABEL_IDS, SHAPES, generate_scenes
from cl_bench.data.dense.voc import load_voc_split
from cl_bench.specs import canonical_hash
from cl_bench.params import Strict

GENERATOR_VERSION = "scenes-v1"  # bump when the generator or a writer changes its output


class ScenesParams(Strict):
    """The world is a property of the task: ``seed`` here never depends on the run seed."""

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


@register("dataset", "scenes-voc", params=ScenesParams)
def load_scenes_voc(p: ScenesParams, data_root: Path | None) -> DetectionData:
    """Scenes as a VOC2007 tree (trainval / test), read by the VOC loader; VOC07 11-point metric."""
    voc = ensure_generated("voc", p) / "VOCdevkit" / "VOC2007"
    counters: dict[str, int] = {}
    train = DetectionSplit(load_voc_split(voc, "trainval", SHAPES, counters), cache_images=True)
    test = DetectionSplit(load_voc_split(voc, "test", SHAPES, counters), cache_images=True)
    return DetectionData("scenes-voc", train, test, list(SHAPES), metric="voc", use_07_metric=True,
                         image_size=tuple(p.image_size), meta={**_meta("voc", p, voc), **counters})


@register("dataset", "scenes-coco", params=ScenesParams)
def load_scenes_coco(p: ScenesParams, data_root: Path | None) -> DetectionData:
    """Scenes as COCO instances (boxes + masks, crowds), read with pycocotools; COCOeval bbox/segm."""
    root = ensure_generated("coco", p)
    return coco_data("scenes-coco", root, "annotations/instances_train2017.json", "train2017",
                      "annotations/instances_val2017.json", "val2017", tuple(p.image_size), True,
                      _meta("coco", p, root))


@register("dataset", "scenes-cityscapes", params=ScenesParams)
def load_scenes_cityscapes(p: ScenesParams, data_root: Path | None) -> SegmentationData:
    """Scenes as a Cityscapes tree (labelIds PNGs), mapped to the 19 trainIds by the Cityscapes loader."""
    root = ensure_generated("cityscapes", p)
    data = cityscapes_data("scenes-cityscapes", root, "train", "val", tuple(p.image_size), True,
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
