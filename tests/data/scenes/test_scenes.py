"""The scenes world: determinism, masks/boxes consistency, and the three writers read back by the loaders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from cl_bench.data.dense.cityscapes import LABEL_TO_TRAIN, list_cityscapes_split, read_label_ids, read_train_ids
from cl_bench.data.dense.coco import load_coco_split
from cl_bench.data.scenes.writers import (
    compressed_rle,
    uncompressed_rle,
    voc_difficult,
    write_cityscapes,
    write_coco,
    write_voc,
)
from cl_bench.data.scenes.world import (
    SHAPE_LABEL_IDS,
    SHAPES,
    generate_scenes,
    object_masks,
    render,
    render_label_ids,
    scene_from_json,
)
from cl_bench.data.dense.voc import load_voc_split


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes(24, seed=7, size=(64, 96), crowd_prob=0.4)


def test_deterministic_and_prefix_stable(scenes) -> None:
    again = generate_scenes(30, seed=7, size=(64, 96), crowd_prob=0.4)
    assert [s.to_json() for s in scenes] == [s.to_json() for s in again[:24]]
    for a, b in zip(scenes[:3], again[:3]):
        assert np.array_equal(render(a)[0], render(b)[0])
    other = generate_scenes(3, seed=8, size=(64, 96))
    assert not np.array_equal(render(scenes[0])[0], render(other[0])[0])


def test_boxes_areas_occlusion_match_masks(scenes) -> None:
    for s in scenes:
        img, visible = render(s)
        assert img.shape == (64, 96, 3) and img.dtype == np.uint8
        full, _ = object_masks(s)
        assert (visible.sum(0) <= 1).all()  # visible masks are disjoint
        for o, m, f in zip(s.objects, visible, full):
            ys, xs = np.nonzero(m)
            assert o.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert o.area == m.sum()
            assert o.occlusion == pytest.approx(1 - m.sum() / f.sum(), abs=1e-4)
            assert o.shape in SHAPES
    assert any(o.crowd for s in scenes for o in s.objects)
    assert any(o.occlusion > 0 for s in scenes for o in s.objects)


def test_json_round_trip_and_relations(scenes) -> None:
    for s in scenes[:5]:
        d = json.loads(json.dumps(s.to_json()))
        back = scene_from_json(d)
        assert back.to_json() == s.to_json()
        assert np.array_equal(render(back)[0], render(s)[0])
        for r in s.relations:
            i, j = r["subject"], r["object"]
            if r["relation"] == "left of":
                assert s.objects[i].center[0] < s.objects[j].center[0]
            if r["relation"] == "above":
                assert s.objects[i].center[1] < s.objects[j].center[1]


def test_voc_writer_read_back(tmp_path: Path, scenes) -> None:
    voc = write_voc({"trainval": scenes[:16], "test": scenes[16:]}, tmp_path)
    assert (voc / "ImageSets" / "Main" / "test.txt").read_text().split() == [f"{i:06d}" for i in range(17, 25)]
    recs = load_voc_split(voc, "trainval", SHAPES) + load_voc_split(voc, "test", SHAPES)
    descriptions = json.loads((voc / "scenes.json").read_text())
    for s, r in zip(scenes, recs):
        assert descriptions[r.image_id] == json.loads(json.dumps(s.to_json()))
        assert np.array_equal(r.boxes, np.array([o.bbox for o in s.objects], np.float32))
        assert r.labels.tolist() == [SHAPES.index(o.shape) for o in s.objects]
        assert r.difficult.tolist() == [voc_difficult(o, 40) for o in s.objects]
        assert r.truncated.tolist() == [o.truncated for o in s.objects]
        with Image.open(r.file_name) as im:
            assert im.size == (96, 64)
    assert any(r.difficult.any() for r in recs) and not all(r.difficult.all() for r in recs)


def test_coco_writer_read_back(tmp_path: Path, scenes) -> None:
    write_coco({"train": scenes[:16], "val": scenes[16:]}, tmp_path)
    recs, names, ids = load_coco_split(tmp_path / "annotations" / "instances_train2017.json", tmp_path / "train2017")
    assert names == list(SHAPES) and ids == [1, 2, 4, 7, 9, 13]
    doc = json.loads((tmp_path / "annotations" / "instances_train2017.json").read_text())
    kinds = {"polygon": 0, "rle": 0, "crowd": 0}
    for s, r in zip(scenes, recs):
        _, visible = render(s)
        assert np.array_equal(r.boxes, np.array([o.bbox for o in s.objects], np.float32))  # same as VOC
        assert r.iscrowd.tolist() == [o.crowd for o in s.objects]
        decoded = r.instance_masks().astype(bool)
        for o, m, d in zip(s.objects, visible, decoded):
            if o.crowd or o.occlusion > 0 or o.truncated:  # RLE: exact
                assert np.array_equal(m, d)
                kinds["crowd" if o.crowd else "rle"] += 1
            else:  # the exact polygon: the renderer rasterises objects with pycocotools too
                assert np.array_equal(m, d)
                kinds["polygon"] += 1
    assert all(v > 0 for v in kinds.values()), kinds
    crowd_anns = [a for a in doc["annotations"] if a["iscrowd"]]
    assert crowd_anns and all(isinstance(a["segmentation"]["counts"], list) for a in crowd_anns)


def test_rle_encoders_round_trip() -> None:
    rng = np.random.default_rng(0)
    for first in (0, 1):
        m = rng.uniform(size=(13, 17)) < 0.4
        m[0, 0] = bool(first)
        unc = uncompressed_rle(m)
        assert np.array_equal(mask_utils.decode(mask_utils.frPyObjects(unc, 13, 17)).astype(bool), m)
        comp = compressed_rle(m)
        assert np.array_equal(mask_utils.decode({"size": comp["size"], "counts": comp["counts"].encode()}), m)


def test_cityscapes_writer_read_back(tmp_path: Path, scenes) -> None:
    write_cityscapes({"train": scenes[:16], "val": scenes[16:]}, tmp_path)
    images, labels = list_cityscapes_split(tmp_path, "val")
    assert len(images) == 8 and all(p.name.endswith("_leftImg8bit.png") for p in images)
    seen_ids: set[int] = set()
    by_stem = json.loads((tmp_path / "leftImg8bit" / "scenes_val.json").read_text())
    for img, lab in zip(images, labels):
        stem = img.name[: -len("_leftImg8bit.png")]
        scene = scene_from_json(by_stem[stem])
        ids = read_label_ids(lab)
        assert np.array_equal(ids, render_label_ids(scene))
        seen_ids |= set(np.unique(ids).tolist())
        train = read_train_ids(lab)
        for label_id in np.unique(ids):  # the 19-class table, everything else 255
            assert np.all(train[ids == label_id] == LABEL_TO_TRAIN.get(int(label_id), 255))
        _, visible = render(scene)
        for o, m in zip(scene.objects, visible):
            assert np.all(ids[m] == SHAPE_LABEL_IDS[o.shape])
    assert seen_ids - set(LABEL_TO_TRAIN), "some labelIds must map to 255"
    assert seen_ids & set(LABEL_TO_TRAIN)


def test_world_options_sizes_and_upright() -> None:
    """``sizes`` restricts the radius ranges; ``upright`` keeps everything within 15 degrees of
    standing and points triangles in one of the four directions; the defaults draw the same
    scenes as before the options existed (same random stream)."""
    from cl_bench.data.scenes.captions import triangle_direction
    from cl_bench.data.scenes.world import SIZE_RANGES, UPRIGHT_JITTER

    plain = generate_scenes(40, seed=3, size=64, crowd_prob=0.0)
    explicit = generate_scenes(40, seed=3, size=64, crowd_prob=0.0, sizes=tuple(SIZE_RANGES), upright=False)
    assert [s.to_json() for s in plain] == [s.to_json() for s in explicit]
    big = generate_scenes(40, seed=3, size=64, crowd_prob=0.0, sizes=("medium", "large"))
    radii = [o.radius / 64 for s in big for o in s.objects]
    assert min(radii) >= SIZE_RANGES["medium"][0] and max(radii) <= SIZE_RANGES["large"][1]
    assert {o.size for s in big for o in s.objects} == {"medium", "large"}
    up = generate_scenes(60, seed=3, size=64, crowd_prob=0.3, upright=True)
    objs = [o for s in up for o in s.objects]
    assert {o.shape for o in objs} == set(SHAPES)
    for o in objs:
        lean = (o.rotation + 45.0) % 90.0 - 45.0 if o.shape == "triangle" else (o.rotation + 180.0) % 360.0 - 180.0
        assert abs(lean) <= UPRIGHT_JITTER + 1e-9, (o.shape, o.rotation)
        if o.shape == "triangle" and not o.crowd:
            assert triangle_direction(o) is not None
