"""``scenes-mmvp``: MMVP-VLM-style image pairs from the procedural scenes, written in the released
MMVP-VLM layout (``Questions.csv`` + ``MLLM_VLM Images/<type>/<qid>.jpg``) under the cache and
read back through the real loader (:func:`cl_bench.data.image_text.mmvp.read_mmvp_vlm`).

A pair is one base scene (background, clutter, 1-2 distractor objects) rendered twice with
the same noise, the two renders differing in ONE visual pattern of a "focus" object drawn on
top; each image gets one statement that is true for it and false for its twin (the grammar
and words of :mod:`cl_bench.data.scenes.captions`, so the scene text towers can read them):

=================== ====================== ===============================================
CSV type            MMVP pattern           twin A / twin B statements
=================== ====================== ===============================================
Orientation         Orientation/Direction  "a red triangle pointing up" / "... pointing down"
Presence            Presence of Features   "there is a red star" / "there is no red star"
Quantity            Quantity and Count     "two stars" / "three stars" (exactly that many)
Spatial             Positional/Relational  "a red star left of a blue circle" / "... right of ..."
Color               Color and Appearance   "a red star" / "a green star"
Structural Character Structural Character. "a red star" / "a red cross"
=================== ====================== ===============================================

Not covered, because the world cannot express them: *State and Condition* (objects have no
states: nothing opens, breaks, melts or lights up), *Texts* (nothing carries writing), and
*Viewpoint and Perspective* (the camera is fixed and orthographic: there is no "from above",
"close-up" or "side view"; an object's size is an attribute, not a viewpoint). The scenes'
short captions never say "no": a text tower trains on a negation only where the training world
holds counterfactual twins of the Presence kind (``scenes-captions``' ``twins``, made by
:func:`make_pair` at indices disjoint from the test pairs'), which is MMVP's point about presence.

Distractor objects that share a shape with a focus object are removed, so every statement is
decided by the focus objects alone; which twin comes first in a pair is random.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from cl_bench.components import register
from cl_bench.data.scenes.captions import DIRECTIONS, NUMBER_WORDS, OPPOSITE, PLURALS, Phrase
from cl_bench.data.generated_tree import ensure_tree
from cl_bench.data.image_text.mmvp import IMAGE_DIRS, MMVPData, read_mmvp_vlm
from cl_bench.data.scenes.world import COLOURS, SHAPES, SIZE_RANGES, Scene, SceneObject, generate_scene, render
from cl_bench.params import Strict

GENERATOR_VERSION = "mmvp-scenes-v1"
COVERED_TYPES: tuple[str, ...] = ("Orientation", "Presence", "Quantity", "Spatial", "Color", "Structural Character")
NOT_COVERED: dict[str, str] = {
    "State": "objects have no states",
    "Text": "nothing in the world carries writing",
    "Camera Perspective": "the camera is fixed (no viewpoint change)",
}
INDEX_OFFSET = 2_000_000  # scene indices far from those the captions datasets train on
_OPPOSITE_REL = {"left of": "right of", "above": "below"}


class ScenesMMVPParams(Strict):
    """The world is a property of the task (``seed`` never depends on the run seed)."""

    pairs_per_pattern: int = Field(default=30, ge=1, le=5000)
    image_size: int = Field(default=64, ge=32, le=256)
    seed: int = Field(default=0, ge=0)
    types: list[str] = Field(default_factory=lambda: list(COVERED_TYPES), min_length=1)
    jpeg_quality: int = Field(default=95, ge=50, le=100)
    # params of the 'scenes-captions' dataset that methods trained fresh learn from (None: eval only)
    train: dict[str, Any] | None = Field(default_factory=dict)

    @field_validator("types")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in COVERED_TYPES]
        if bad:
            raise ValueError(f"unknown or not expressible pattern type(s) {bad}; choose from {list(COVERED_TYPES)}")
        if len(set(v)) != len(v):
            raise ValueError("pattern types must not repeat")
        return [t for t in COVERED_TYPES if t in v]  # the release's order


def _obj(shape: str, colour: str, size: str, x: float, y: float, rng: np.random.Generator, m: int,
         rotation: float | None = None) -> SceneObject:
    lo, hi = SIZE_RANGES[size]
    rot = (0.0 if shape == "circle" else float(rng.uniform(0, 360))) if rotation is None else rotation
    return SceneObject(shape, colour, size, (float(x), float(y)), float(m * rng.uniform(lo, hi)), rot)


def _base(seed: int, index: int, size: int, drop_shapes: set[str]) -> Scene:
    scene = generate_scene(seed, index, size, min_objects=1, max_objects=2, crowd_prob=0.0, n_clutter=(1, 3))
    scene.objects = [o for o in scene.objects if o.shape not in drop_shapes]
    scene.relations = []  # the statements are decided by the focus objects (see the module doc)
    return scene


def _with(scene: Scene, objs: list[SceneObject]) -> Scene:
    out = copy.deepcopy(scene)
    out.objects = out.objects + copy.deepcopy(objs)
    return out


def _spread(rng: np.random.Generator, n: int, m: int, radius: float) -> list[tuple[float, float]]:
    """``n`` centres inside the image whose discs (plus a gap) do not overlap."""
    for _ in range(1000):
        pts = [(float(rng.uniform(radius + 2, m - radius - 2)), float(rng.uniform(radius + 2, m - radius - 2)))
               for _ in range(n)]
        if all(np.hypot(a[0] - b[0], a[1] - b[1]) > 2 * radius + 3 for i, a in enumerate(pts) for b in pts[i + 1:]):
            return pts
    raise RuntimeError("could not place the objects apart")  # pragma: no cover - ample room at >= 32 px


def make_pair(kind: str, seed: int, k: int, size: int) -> tuple[Scene, Scene, str, str]:
    """Twin scenes A and B of pattern ``kind`` (pair ``k``) and the statement true for each."""
    rng = np.random.default_rng([seed, COVERED_TYPES.index(kind), k, 17])
    index = INDEX_OFFSET + 100_000 * COVERED_TYPES.index(kind) + k
    m = size
    colours, shapes = list(COLOURS), list(SHAPES)
    colour = str(rng.choice(colours))
    cx, cy = m * rng.uniform(0.35, 0.65), m * rng.uniform(0.4, 0.65)
    if kind == "Orientation":
        d1 = str(rng.choice(list(DIRECTIONS)))
        d2 = OPPOSITE[d1]
        base = _base(seed, index, size, {"triangle"})
        ta, tb = (_obj("triangle", colour, "large", cx, cy, rng, m, rotation=(DIRECTIONS[d] - 270.0) % 360.0)
                  for d in (d1, d2))
        tb.radius = ta.radius
        phrase = Phrase("triangle", colour).text()
        return _with(base, [ta]), _with(base, [tb]), f"{phrase} pointing {d1}", f"{phrase} pointing {d2}"
    if kind == "Presence":
        shape = str(rng.choice(shapes))
        base = _base(seed, index, size, {shape})
        obj = _obj(shape, colour, str(rng.choice(["medium", "large"])), cx, cy, rng, m)
        phrase = Phrase(shape, colour).text()
        bare = phrase.split(" ", 1)[1]
        return _with(base, [obj]), _with(base, []), f"there is {phrase}", f"there is no {bare}"
    if kind == "Quantity":
        shape = str(rng.choice(shapes))
        n = int(rng.integers(1, 4))
        base = _base(seed, index, size, {shape})
        r_max = SIZE_RANGES["small"][1] * m
        objs = [_obj(shape, colour, "small", x, y, rng, m) for x, y in _spread(rng, n + 1, m, r_max)]

        def words(c: int) -> str:
            return f"{NUMBER_WORDS[c]} {shape if c == 1 else PLURALS[shape]}"

        return _with(base, objs[:n]), _with(base, objs), words(n), words(n + 1)
    if kind == "Spatial":
        s1, s2 = (str(s) for s in rng.choice(shapes, size=2, replace=False))
        c2 = str(rng.choice([c for c in colours if c != colour]))
        rel = str(rng.choice(list(_OPPOSITE_REL)))
        base = _base(seed, index, size, {s1, s2})
        lo, hi = m * rng.uniform(0.2, 0.32), m * rng.uniform(0.68, 0.8)
        mid = m * rng.uniform(0.4, 0.6)
        p_first, p_second = ((lo, mid), (hi, mid)) if rel == "left of" else ((mid, lo), (mid, hi))
        x = _obj(s1, colour, "medium", *p_first, rng, m)
        y = _obj(s2, c2, "medium", *p_second, rng, m)
        xs, ys = copy.deepcopy(x), copy.deepcopy(y)
        xs.center, ys.center = y.center, x.center
        a, b = Phrase(s1, colour).text(), Phrase(s2, c2).text()
        return _with(base, [x, y]), _with(base, [xs, ys]), f"{a} {rel} {b}", f"{a} {_OPPOSITE_REL[rel]} {b}"
    if kind == "Color":
        shape = str(rng.choice(shapes))
        c2 = str(rng.choice([c for c in colours if c != colour]))
        base = _base(seed, index, size, {shape})
        oa = _obj(shape, colour, str(rng.choice(["medium", "large"])), cx, cy, rng, m)
        ob = copy.deepcopy(oa)
        ob.colour = c2
        return _with(base, [oa]), _with(base, [ob]), Phrase(shape, colour).text(), Phrase(shape, c2).text()
    if kind == "Structural Character":
        s1, s2 = (str(s) for s in rng.choice(shapes, size=2, replace=False))
        base = _base(seed, index, size, {s1, s2})
        oa = _obj(s1, colour, str(rng.choice(["medium", "large"])), cx, cy, rng, m)
        ob = copy.deepcopy(oa)
        ob.shape = s2
        ob.rotation = 0.0 if s2 == "circle" else oa.rotation
        return _with(base, [oa]), _with(base, [ob]), Phrase(s1, colour).text(), Phrase(s2, colour).text()
    raise ValueError(f"unknown pattern type {kind!r}")


def write_scenes_mmvp(root: Path, p: ScenesMMVPParams) -> None:
    """Write the pairs in the MMVP-VLM release layout under ``root``."""
    image_root = root / IMAGE_DIRS[0]
    rows: list[tuple[int, str, str]] = []
    qid = 1
    for kind in p.types:
        (image_root / kind).mkdir(parents=True, exist_ok=True)
        for k in range(p.pairs_per_pattern):
            a, b, sa, sb = make_pair(kind, p.seed, k, p.image_size)
            swap = bool(np.random.default_rng([p.seed, COVERED_TYPES.index(kind), k, 23]).integers(2))
            for scene, statement in ((b, sb), (a, sa)) if swap else ((a, sa), (b, sb)):
                Image.fromarray(render(scene)[0]).save(image_root / kind / f"{qid}.jpg", quality=p.jpeg_quality,
                                                       subsampling=0)
                rows.append((qid, kind, statement))
                qid += 1
    with open(root / "Questions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["qid", "type", "statement"])
        writer.writerows(rows)


@register("dataset", "scenes-mmvp", params=ScenesMMVPParams)
def load_scenes_mmvp(p: ScenesMMVPParams, data_root: Path | None) -> MMVPData:
    """MMVP-VLM-style pairs from the scenes (6 of the 9 patterns), via the real MMVP-VLM reader."""
    gen = p.model_dump(mode="json", exclude={"train"})
    root = ensure_tree("mmvp", gen, GENERATOR_VERSION, lambda tmp: write_scenes_mmvp(tmp, p))
    train_ref = None if p.train is None else ("scenes-captions", {"image_size": p.image_size, **p.train})
    return read_mmvp_vlm(root, name="scenes-mmvp", image_size=p.image_size, images_dir=IMAGE_DIRS[0],
                         meta={"source": "embedded scenes (MMVP-VLM layout)", "generator": GENERATOR_VERSION,
                               "not_covered": NOT_COVERED, **gen},
                         train_ref=train_ref)
