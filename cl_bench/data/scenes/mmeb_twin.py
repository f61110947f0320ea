"""``scenes-mmeb-mini``: MMEB-style datasets made from the procedural scenes, written in the
MMEB-eval layout (``<Dataset>/test-00000-of-00001.parquet`` + ``images.zip`` holding
``eval_images/<Dataset>/*.png``) under the cache and read back through the real reader
(:func:`cl_bench.data.image_text.mmeb.read_mmeb_tree`). Instructions follow MMEB's wording and its
``<|image_1|>`` image token (kept in the text, as VLM2Vec feeds CLIP-style baselines).

========================== ============== =========================================================
dataset                    meta-task      query -> candidates (the answer first)
========================== ============== =========================================================
Scenes-Cls                 classification image + instruction -> the 6 shape names (label: the
                                          shape of the largest visible object)
Scenes-VQA                 vqa            image + question (colour of the <shape>, how many
                                          <shapes>, shape of the <colour> object) -> every answer
                                          of that question type
Scenes-T2I                 retrieval      caption -> images (the captioned one + distractors the
                                          caption is not true of)
Scenes-I2T                 retrieval      image -> captions (its own + captions false for it)
Scenes-Grounding           grounding      image + "<colour> <shape>" -> crops (the named object,
                                          the scene's other objects, objects of other scenes)
========================== ============== =========================================================

IND datasets come from the world of ``scenes-captions`` (the methods' training data) at scene
indices far from the ones it uses; the ``-Busy`` twins (OOD) come from a shifted world: 3-6
objects and crowds half of the time.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from cl_bench.components import register
from cl_bench.data.scenes.captions import NUMBER_WORDS, PLURALS, largest_object, short_captions
from cl_bench.data.generated_tree import ensure_tree
from cl_bench.data.image_text.mmeb import MMEBData, read_mmeb_tree
from cl_bench.data.scenes.world import COLOURS, SHAPES, Scene, generate_scene, render
from cl_bench.params import Strict

GENERATOR_VERSION = "mmeb-scenes-v1"
IMAGE_DIR = "eval_images"
KINDS: dict[str, str] = {"Cls": "classification", "VQA": "vqa", "T2I": "retrieval", "I2T": "retrieval",
                         "Grounding": "grounding"}
MINI_DATASETS: dict[str, tuple[str, str]] = {
    **{f"Scenes-{k}": (mt, "IND") for k, mt in KINDS.items()},
    **{f"Scenes-{k}-Busy": (mt, "OOD") for k, mt in KINDS.items()},
}
WORLDS: dict[str, dict[str, Any]] = {  # generate_scene options; IND = scenes-captions' defaults (see world())
    "IND": {"min_objects": 1, "max_objects": 4, "crowd_prob": 0.15},
    "OOD": {"min_objects": 3, "max_objects": 6, "crowd_prob": 0.5},
}
INDEX_OFFSET = 3_000_000
WORLD_KEYS = ("min_objects", "max_objects", "crowd_prob", "sizes", "upright")  # scenes-captions' world options
INSTRUCTIONS = {
    "cls": "<|image_1|>\nRepresent the given image for classification",
    "vqa": "<|image_1|>\nRepresent the given image with the following question: ",
    "t2i": "Find me an everyday image that matches the given caption: ",
    "img": "<|image_1|>\nRepresent the given image.",
    "i2t": "<|image_1|>\nFind an image caption describing the given everyday image.",
    "grd": "<|image_1|>\nSelect the portion of the image that isolates the object of the given label: ",
    "crop": "<|image_1|>\nRepresent the given cropped image of the object",
}


class ScenesMMEBParams(Strict):
    """The world is a property of the task (``seed`` never depends on the run seed)."""

    n_queries: int = Field(default=100, ge=2, le=5000)  # rows per dataset
    n_candidates: int = Field(default=16, ge=2, le=1000)  # retrieval / grounding candidates per row
    image_size: int = Field(default=64, ge=32, le=256)
    seed: int = Field(default=0, ge=0)
    datasets: list[str] = Field(default_factory=lambda: list(MINI_DATASETS), min_length=1)
    # params of the 'scenes-captions' dataset that methods trained fresh learn from (None: eval only)
    train: dict[str, Any] | None = Field(default_factory=dict)

    @field_validator("datasets")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d not in MINI_DATASETS]
        if bad:
            raise ValueError(f"unknown dataset(s) {bad}; choose from {list(MINI_DATASETS)}")
        return [d for d in MINI_DATASETS if d in v]

    @field_validator("train")
    @classmethod
    def _train_params(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v:  # the world options reach generate_scene here, before any training split is read
            from cl_bench.data.scenes.captioned import CaptionedScenesParams

            CaptionedScenesParams.model_validate(v)
        return v


def world(p: ScenesMMEBParams, split: str) -> dict[str, Any]:
    """generate_scene options of ``split``: IND is the world the methods train in (the world options
    of ``p.train`` over scenes-captions' defaults), OOD the busy one."""
    opts = dict(WORLDS[split])
    if split == "IND" and p.train:
        opts.update({k: (tuple(v) if k == "sizes" else v) for k, v in p.train.items() if k in WORLD_KEYS})
    return opts


class _Writer:
    """Collects one dataset's rows and PNG images (paths relative to eval_images/)."""

    def __init__(self, name: str, zf: zipfile.ZipFile) -> None:
        self.name, self.zf = name, zf
        self.rows: dict[str, list[Any]] = {"qry_text": [], "qry_img_path": [], "tgt_text": [], "tgt_img_path": []}
        self.written: set[str] = set()

    def image(self, array: np.ndarray, stem: str) -> str:
        rel = f"{self.name}/{stem}.png"
        if rel in self.written:
            return rel
        self.written.add(rel)
        buf = io.BytesIO()
        Image.fromarray(array).save(buf, format="PNG")
        self.zf.writestr(f"{IMAGE_DIR}/{rel}", buf.getvalue())
        return rel

    def row(self, qry_text: str, qry_img: str, tgt_text: list[str], tgt_img: list[str]) -> None:
        for key, value in zip(self.rows, (qry_text, qry_img, tgt_text, tgt_img)):
            self.rows[key].append(value)

    def save(self, root: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({
            "qry_text": pa.array(self.rows["qry_text"], pa.string()),
            "qry_img_path": pa.array(self.rows["qry_img_path"], pa.string()),
            "tgt_text": pa.array(self.rows["tgt_text"], pa.list_(pa.string())),
            "tgt_img_path": pa.array(self.rows["tgt_img_path"], pa.list_(pa.string())),
        })
        (root / self.name).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / self.name / "test-00000-of-00001.parquet")


def _true_captions(scene: Scene) -> set[str]:
    """Every short caption the generator can emit for ``scene`` (it cycles through all of them)."""
    return set(short_captions(scene, 1000, 0))


def _crop(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    pad = max(2, round(0.2 * max(x1 - x0, y1 - y0)))
    x0, y0, x1, y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    return np.asarray(Image.fromarray(image[y0:y1, x0:x1]).resize((size, size), Image.BICUBIC), dtype=np.uint8)


def _vqa(scene: Scene) -> list[tuple[str, str, list[str]]]:
    """Every askable (question, answer, all answers of the question type) about ``scene``."""
    singles = [o for o in scene.objects if not o.crowd]
    shapes = [o.shape for o in singles]
    colours = [o.colour for o in singles]
    crowded = {o.shape for o in scene.objects if o.crowd}
    asks: list[tuple[str, str, list[str]]] = []
    for o in singles:
        if shapes.count(o.shape) == 1 and o.shape not in crowded:
            asks.append((f"what is the colour of the {o.shape}", o.colour, list(COLOURS)))
        if colours.count(o.colour) == 1:
            asks.append((f"what is the shape of the {o.colour} object", o.shape, list(SHAPES)))
    for s in sorted(set(shapes) - crowded):
        asks.append((f"how many {PLURALS[s]} are there", NUMBER_WORDS[shapes.count(s)], list(NUMBER_WORDS[1:7])))
    return asks


def _answer_first(answer: str, options: list[str]) -> list[str]:
    return [answer] + [o for o in options if o != answer]


def write_dataset(zf: zipfile.ZipFile, root: Path, name: str, p: ScenesMMEBParams) -> None:
    kind = name.split("-")[1]
    split = MINI_DATASETS[name][1]
    options = world(p, split)
    base = INDEX_OFFSET + 100_000 * list(MINI_DATASETS).index(name)
    rng = np.random.default_rng([p.seed, list(MINI_DATASETS).index(name), 29])
    w = _Writer(name, zf)
    scenes: list[Scene] = []
    index = base
    while len(scenes) < p.n_queries:  # a VQA / grounding scene must offer a question / a unique object
        scene = generate_scene(p.seed, index, p.image_size, **options)
        index += 1
        if (kind == "Grounding" and not _unique_objects(scene)) or (kind == "VQA" and not _vqa(scene)):
            continue
        scenes.append(scene)
    images = [render(s)[0] for s in scenes]
    k = min(p.n_candidates, len(scenes))
    if kind in ("Cls", "VQA", "T2I", "I2T"):
        paths = [w.image(im, f"scene_{i:05d}") for i, im in enumerate(images)]
    if kind in ("T2I", "I2T"):
        true_sets = [_true_captions(s) for s in scenes]
        first = [short_captions(s, 1, p.seed)[0] for s in scenes]
    for i, scene in enumerate(scenes):
        others = [j for j in rng.permutation(len(scenes)).tolist() if j != i]
        if kind == "Cls":
            label = scene.objects[largest_object(scene)].shape
            w.row(INSTRUCTIONS["cls"], paths[i], _answer_first(label, list(SHAPES)), [""] * len(SHAPES))
        elif kind == "VQA":
            asks = _vqa(scene)
            question, answer, options = asks[int(rng.integers(len(asks)))]
            w.row(INSTRUCTIONS["vqa"] + question, paths[i], _answer_first(answer, options), [""] * len(options))
        elif kind == "T2I":
            caption = first[i]
            distract = [j for j in others if caption not in true_sets[j]][: k - 1]
            w.row(INSTRUCTIONS["t2i"] + caption, "", [INSTRUCTIONS["img"]] * (1 + len(distract)),
                  [paths[i]] + [paths[j] for j in distract])
        elif kind == "I2T":
            caption = first[i]
            pool: list[str] = []
            for j in others:
                c = first[j]
                if c not in true_sets[i] and c not in pool:
                    pool.append(c)
            w.row(INSTRUCTIONS["i2t"], paths[i], [caption] + pool[: k - 1], [""] * (1 + len(pool[: k - 1])))
        else:
            _grounding_row(w, scenes, images, i, others, k, rng, p.image_size)
    w.save(root)


def _unique_objects(scene: Scene) -> list[int]:
    keys = [(o.shape, o.colour) for o in scene.objects]
    return [n for n, o in enumerate(scene.objects) if not o.crowd and keys.count(keys[n]) == 1]


def _grounding_row(w: _Writer, scenes: list[Scene], images: list[np.ndarray], i: int, others: list[int],
                   k: int, rng: np.random.Generator, size: int) -> None:
    scene = scenes[i]
    target = int(rng.choice(_unique_objects(scene)))
    obj = scene.objects[target]
    label = f"{obj.colour} {obj.shape}"
    query = w.image(images[i], f"scene_{i:05d}")
    crops = [w.image(_crop(images[i], obj.bbox, size), f"crop_{i:05d}_{target}")]
    for n, o in enumerate(scene.objects):  # the scene's other objects first
        if n != target and len(crops) < k:
            crops.append(w.image(_crop(images[i], o.bbox, size), f"crop_{i:05d}_{n}"))
    for j in others:  # then objects of other scenes that are not a <colour> <shape> of the label
        if len(crops) >= k:
            break
        cand = [n for n, o in enumerate(scenes[j].objects) if (o.colour, o.shape) != (obj.colour, obj.shape)]
        if cand:
            n = int(rng.choice(cand))
            crops.append(w.image(_crop(images[j], scenes[j].objects[n].bbox, size), f"crop_{j:05d}_{n}"))
    w.row(INSTRUCTIONS["grd"] + label, query, [INSTRUCTIONS["crop"]] * len(crops), crops)


def write_scenes_mmeb(root: Path, p: ScenesMMEBParams) -> None:
    """Every dataset of ``p.datasets`` as parquet + one ``images.zip``."""
    with zipfile.ZipFile(root / "images.zip", "w", compression=zipfile.ZIP_STORED) as zf:
        for name in p.datasets:
            write_dataset(zf, root, name, p)


@register("dataset", "scenes-mmeb-mini", params=ScenesMMEBParams)
def load_scenes_mmeb_mini(p: ScenesMMEBParams, data_root: Path | None) -> MMEBData:
    """MMEB-style classification, VQA, retrieval and grounding sets from the scenes (IND + OOD)."""
    gen = p.model_dump(mode="json", exclude={"train"})
    if world(p, "IND") != WORLDS["IND"]:  # keyed only when it moved: the default tree keeps its key
        gen["ind_world"] = world(p, "IND")
    root = ensure_tree("mmeb", gen, GENERATOR_VERSION, lambda tmp: write_scenes_mmeb(tmp, p))
    train_ref = None if p.train is None else ("scenes-captions", {"image_size": p.image_size, **p.train})
    return read_mmeb_tree(root, {n: MINI_DATASETS[n] for n in p.datasets}, name="scenes-mmeb-mini",
                          image_size=p.image_size, image_dir=IMAGE_DIR,
                          meta={"source": "embedded scenes (MMEB-eval layout)", "generator": GENERATOR_VERSION,
                                **gen},
                          train_ref=train_ref)
