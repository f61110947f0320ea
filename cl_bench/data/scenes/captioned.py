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
- ``twins`` (optional, {MMVP pattern type: pairs}): counterfactual twins appended to the train
  split, CounterCurate-style (Zhang et al. 2024, arXiv 2402.13254): the ``scenes-mmvp`` pair
  generator's scenes at indices from :data:`TWIN_FIRST` on (disjoint from every test pair's), both
  renders captioned with only the statement true for each ("a red triangle pointing up" /
  "... pointing down", "there is a red star" / "there is no red star"), each one's hard negative
  its twin's statement (false for it by construction); ``twin_of`` pairs them so the image–text
  trainer puts both in one batch. Their label is the largest shape of the twin with objects.

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
from cl_bench.data.scenes.mmvp_twin import COVERED_TYPES, make_pair
from cl_bench.data.scenes.world import SHAPES, Scene, generate_scene, render
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
TWIN_FIRST = 50_000  # the first pair index of the training twins (scenes-mmvp's test pairs: < 5,000)


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
    twins: dict[str, int] | None = None  # counterfactual training twins per MMVP pattern type (module doc)

    @model_validator(mode="after")
    def _objects(self) -> CaptionedScenesParams:
        if self.max_objects < self.min_objects:
            raise ValueError(f"max_objects ({self.max_objects}) must be >= min_objects ({self.min_objects})")
        for kind, pairs in (self.twins or {}).items():
            if kind not in COVERED_TYPES:
                raise ValueError(f"twins: unknown pattern type {kind!r}; choose from {list(COVERED_TYPES)}")
            if not 1 <= pairs <= TWIN_FIRST:
                raise ValueError(f"twins: {kind} needs 1..{TWIN_FIRST} pairs, got {pairs}")
        return self


def _world_params(p: CaptionedScenesParams) -> dict[str, Any]:
    """The params, without the world options left at their defaults (so that the key of a world
    made before those options existed does not move)."""
    d = p.model_dump(mode="json")
    for name, default in (("sizes", None), ("upright", False), ("twins", None)):
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
        negatives = hard_negatives(scene, p.caption_seed)
        _describe(texts, scene, short_captions(scene, p.captions_per_image, p.caption_seed), scene,
                  [(h["text"], h["positive"]) for h in negatives])
    twins: list[np.ndarray] = []
    for kind, pairs in (p.twins or {}).items():
        for k in range(TWIN_FIRST, TWIN_FIRST + pairs):
            a, b, sa, sb = make_pair(kind, p.seed, k, p.image_size)
            labelled = a if a.objects else b
            for scene, statement, other in ((a, sa, sb), (b, sb, sa)):
                twins.append(render(scene)[0])
                _describe(texts, scene, [statement], labelled, [(other, statement)])
    if twins:
        images = np.concatenate([images, np.stack(twins)])
    return images, texts


def _describe(texts: dict[str, list[Any]], scene: Scene, captions: list[str], labelled: Scene,
              negatives: list[tuple[str, str]]) -> None:
    """Append one image's texts; ``negatives``: (hard negative, the true caption it swaps)."""
    texts["scene_ids"].append(scene.scene_id)
    texts["captions"].append(captions)
    texts["long"].append(long_caption(scene))
    texts["negatives"].append([neg for neg, _ in negatives])
    texts["negative_positives"].append([pos for _, pos in negatives])
    texts["labels"].append(SHAPES.index(labelled.objects[largest_object(labelled)].shape))


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


def _split(images: np.ndarray, texts: dict[str, Any], rows: np.ndarray,
           twin_of: np.ndarray | None = None) -> CaptionedImages:
    def pick(key: str) -> list[Any]:
        return [texts[key][i] for i in rows.tolist()]

    return CaptionedImages(
        ImageList(images[rows]), pick("captions"), long_captions=pick("long"),
        labels=np.asarray(pick("labels"), np.int64), hard_negatives=pick("negatives"),
        hard_negative_positives=pick("negative_positives"), twin_of=twin_of,
    )


def build_captioned_scenes(p: CaptionedScenesParams, name: str = "scenes-captions") -> CaptionedImageData:
    """The ``scenes-captions`` data for ``p``."""
    images, texts, root = _load_or_generate(p)
    n = p.n_train + p.n_test
    n_twins = len(images) - n  # the twins' renders, in pairs, after the train and test scenes
    train = None
    if p.n_train or n_twins:
        twin_of = None
        if n_twins:
            twin_of = np.concatenate([np.full(p.n_train, -1), p.n_train + (np.arange(n_twins) ^ 1)])
        train = _split(images, texts, np.concatenate([np.arange(p.n_train), np.arange(n, n + n_twins)]), twin_of)
    test = _split(images, texts, np.arange(p.n_train, n))
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
