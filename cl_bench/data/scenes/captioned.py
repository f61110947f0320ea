"""The embedded image–text world: rendered scenes with captions (dataset ``scenes-captions``).

Scene ``i`` of the world ``seed`` (:func:`cl_bench.data.scenes.world.generate_scene`) is rendered at
``image_size`` and described by :mod:`cl_bench.data.scenes.captions`: ``captions_per_image`` short
captions, one long multi-sentence caption and its verified hard negatives.

- Split: the first ``n_train + n_test`` scenes of the world, permuted by ``split_seed``;
  the first ``n_train`` are train, the rest test. Nothing depends on the run seed.
- Label (zero-shot classification): the shape of the object with the most visible pixels
  (ties: the one drawn first); ``class_names`` = :data:`cl_bench.data.scenes.world.SHAPES`.
- Templates: prompts in the captions' own vocabulary (plus "photo"/"picture"), e.g.
  ``"a photo of a {}."``; a task may override them (zero_shot's ``templates``).

Rendering is cached under ``<cache>/generated/scenes-captions-<hash>/`` (one ``.npz`` of
uint8 images and one JSON of texts and labels), written atomically under a file lock.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from filelock import FileLock
from pydantic import Field, model_validator

from cl_bench.atomic import write_atomic
from cl_bench.cache import default_cache_dir
from cl_bench.components import register
from cl_bench.data.scenes.captions import hard_negatives, largest_object, long_caption, short_captions
from cl_bench.data.image_text.types import CaptionedImageData, CaptionedImages, ImageList
from cl_bench.data.scenes.world import SHAPES, generate_scene, render
from cl_bench.specs import canonical_hash
from cl_bench.params import Strict

GENERATOR_VERSION = "scenes-captions-v1"  # bump when scenes, captions or rendering change output
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a {}.",
    "a photo of a {}.",
    "a picture of a {}.",
    "a {} on the street.",
    "there is a {}.",
)


class CaptionedScenesParams(Strict):
    """The world is a property of the task: no field here depends on the run seed."""

    n_train: int = Field(default=2000, ge=0)
    n_test: int = Field(default=500, ge=1)
    image_size: int = Field(default=64, ge=32, le=256)
    captions_per_image: int = Field(default=5, ge=1, le=20)
    seed: int = Field(default=0, ge=0)  # the world
    split_seed: int = Field(default=0, ge=0)  # which scenes are train / test
    caption_seed: int = Field(default=0, ge=0)  # which captions each scene gets
    min_objects: int = Field(default=1, ge=1)
    max_objects: int = Field(default=4, ge=1, le=8)
    crowd_prob: float = Field(default=0.15, ge=0.0, le=1.0)
    sizes: list[Literal["small", "medium", "large"]] | None = None  # object sizes drawn from (None: all three)
    upright: bool = False  # objects stand upright (+-15 degrees; triangles point in one of 4 directions)

    @model_validator(mode="after")
    def _objects(self) -> CaptionedScenesParams:
        if self.max_objects < self.min_objects:
            raise ValueError(f"max_objects ({self.max_objects}) must be >= min_objects ({self.min_objects})")
        return self


def _world_params(p: CaptionedScenesParams) -> dict[str, Any]:
    """The params, without the world options left at their defaults (so that the key of a world
    made before those options existed does not move)."""
    d = p.model_dump(mode="json")
    for name, default in (("sizes", None), ("upright", False)):
        if d[name] == default:
            del d[name]
    return d


def _cache_dir(p: CaptionedScenesParams) -> Path:
    key = canonical_hash({"params": _world_params(p), "version": GENERATOR_VERSION})
    return default_cache_dir() / "generated" / f"scenes-captions-{key[:16]}"


def _generate(p: CaptionedScenesParams) -> tuple[np.ndarray, dict[str, Any]]:
    n = p.n_train + p.n_test
    order = np.random.default_rng([p.split_seed, 7]).permutation(n) if p.split_seed else np.arange(n)
    opts: dict[str, Any] = {"min_objects": p.min_objects, "max_objects": p.max_objects, "crowd_prob": p.crowd_prob}
    if p.sizes is not None:
        opts["sizes"] = tuple(p.sizes)
    if p.upright:
        opts["upright"] = True
    images = np.zeros((n, p.image_size, p.image_size, 3), np.uint8)
    texts: dict[str, list[Any]] = {"scene_ids": [], "captions": [], "long": [], "negatives": [],
                                   "negative_positives": [], "labels": []}
    for k, idx in enumerate(order.tolist()):
        scene = generate_scene(p.seed, int(idx), p.image_size, **opts)
        images[k] = render(scene)[0]
        texts["scene_ids"].append(scene.scene_id)
        texts["captions"].append(short_captions(scene, p.captions_per_image, p.caption_seed))
        texts["long"].append(long_caption(scene))
        negatives = hard_negatives(scene, p.caption_seed)
        texts["negatives"].append([h["text"] for h in negatives])
        texts["negative_positives"].append([h["positive"] for h in negatives])
        texts["labels"].append(SHAPES.index(scene.objects[largest_object(scene)].shape))
    return images, texts


def _load_or_generate(p: CaptionedScenesParams) -> tuple[np.ndarray, dict[str, Any], Path]:
    root = _cache_dir(p)
    npz, meta = root / "images.npz", root / "texts.json"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if npz.is_file() and meta.is_file():
            try:
                with np.load(npz, allow_pickle=False) as z:
                    texts = json.loads(meta.read_text(encoding="utf-8"))
                    if "negative_positives" in texts:  # else: written before the positives were kept
                        return z["images"], texts, root
            except (OSError, ValueError, KeyError, json.JSONDecodeError):
                pass  # a corrupt entry: regenerate
        images, texts = _generate(p)
        buf = io.BytesIO()
        np.savez(buf, images=images)
        write_atomic(npz, buf.getvalue())
        write_atomic(meta, json.dumps(texts))
    return images, texts, root


def _split(images: np.ndarray, texts: dict[str, Any], sl: slice) -> CaptionedImages:
    return CaptionedImages(
        ImageList(images[sl]), texts["captions"][sl], long_captions=texts["long"][sl],
        labels=np.asarray(texts["labels"][sl], np.int64), hard_negatives=texts["negatives"][sl],
        hard_negative_positives=texts["negative_positives"][sl],
    )


def build_captioned_scenes(p: CaptionedScenesParams, name: str = "scenes-captions") -> CaptionedImageData:
    """The ``scenes-captions`` data for ``p``."""
    images, texts, root = _load_or_generate(p)
    train = _split(images, texts, slice(0, p.n_train)) if p.n_train else None
    test = _split(images, texts, slice(p.n_train, p.n_train + p.n_test))
    return CaptionedImageData(
        name=name, train=train, test=test, class_names=list(SHAPES), templates=list(DEFAULT_TEMPLATES),
        arch_inputs={"in_channels": 3, "image_size": (p.image_size, p.image_size)},
        meta={"source": "embedded scenes with generated captions", "generator": GENERATOR_VERSION,
              "label": "shape of the largest visible object", "generated_at": str(root),
              **_world_params(p)},
    )


@register("dataset", "scenes-captions", params=CaptionedScenesParams)
def load_scenes_captions(params: CaptionedScenesParams, data_root: Path | None) -> CaptionedImageData:
    """Rendered scenes, 5 short captions, a long caption and hard negatives each; label = shape
    of the largest visible object. No download (``data_root`` is not used)."""
    return build_captioned_scenes(params)
