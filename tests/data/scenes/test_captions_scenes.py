"""The embedded ``scenes-captions`` dataset: deterministic, cached, labelled by the largest object."""

from __future__ import annotations

import numpy as np
import pytest

from cl_bench import components
from cl_bench.data.scenes.captions import hard_negatives, long_caption, short_captions
from cl_bench.data.scenes.world import SHAPES, generate_scene, render
from cl_bench.errors import ClBenchError

PARAMS = {"n_train": 12, "n_test": 8, "image_size": 48, "captions_per_image": 3}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_contents_match_the_generator(cache):
    data = components.get("dataset", "scenes-captions")(PARAMS, None)
    assert data.name == "scenes-captions" and len(data.train) == 12 and len(data.test) == 8
    assert data.class_names == list(SHAPES) and data.num_classes == 6
    assert data.templates and all(t.count("{}") == 1 for t in data.templates)
    assert data.arch_inputs == {"in_channels": 3, "image_size": (48, 48)}
    # split_seed 0: train = scenes 0..11, test = scenes 12..19 of world 0
    for split, offset in ((data.train, 0), (data.test, 12)):
        for k in range(len(split)):
            scene = generate_scene(0, offset + k, 48)
            img = render(scene)[0]
            np.testing.assert_array_equal(split.images.images[k], img.transpose(2, 0, 1))
            assert split.captions[k] == short_captions(scene, 3, 0)
            assert split.long_captions[k] == long_caption(scene)
            assert split.hard_negatives[k] == [h["text"] for h in hard_negatives(scene, 0)]
            assert split.hard_negative_positives[k] == [h["positive"] for h in hard_negatives(scene, 0)]
            biggest = max(scene.objects, key=lambda o: o.area)  # ties: the first drawn
            assert split.labels[k] == SHAPES.index(biggest.shape)
    x = data.test.images.tensor(slice(0, 2))
    assert x.shape == (2, 3, 48, 48) and x.dtype.is_floating_point and float(x.max()) <= 1.0


def test_deterministic_cached_and_split_by_params(cache):
    load = components.get("dataset", "scenes-captions")
    a = load(PARAMS, None)
    assert len(list(cache.glob("generated/scenes-captions-*/images.npz"))) == 1
    b = load(PARAMS, None)  # from the cache
    assert a.fingerprint == b.fingerprint
    resplit = load({**PARAMS, "split_seed": 3}, None)
    assert resplit.fingerprint != a.fingerprint
    # the same 20 scenes, only re-assigned between train and test
    ids = lambda d: sorted(map(tuple, (c for s in (d.train, d.test) for c in s.captions)))
    assert ids(resplit) == ids(a)
    other_world = load({**PARAMS, "seed": 1}, None)
    assert other_world.test.captions != a.test.captions
    assert load({**PARAMS, "caption_seed": 1}, None).test.captions != a.test.captions


def test_a_cache_written_before_the_positives_were_kept_is_regenerated(cache):
    import json

    load = components.get("dataset", "scenes-captions")
    a = load(PARAMS, None)
    (meta,) = cache.glob("generated/scenes-captions-*/texts.json")
    texts = json.loads(meta.read_text())
    del texts["negative_positives"]
    meta.write_text(json.dumps(texts))
    b = load(PARAMS, None)
    assert b.train.hard_negative_positives == a.train.hard_negative_positives and a.fingerprint == b.fingerprint
    assert "negative_positives" in json.loads(meta.read_text())


def test_bad_params(cache):
    load = components.get("dataset", "scenes-captions")
    with pytest.raises(ClBenchError, match="unknown field"):
        load({"n_tests": 3}, None)
    with pytest.raises(ClBenchError, match="max_objects"):
        load({"min_objects": 3, "max_objects": 2}, None)
    with pytest.raises(ClBenchError, match="image_size"):
        load({"image_size": 8}, None)


def test_counterfactual_twins_follow_the_train_scenes(cache):
    from cl_bench.data.scenes.captioned import TWIN_FIRST
    from cl_bench.data.scenes.mmvp_twin import make_pair

    load = components.get("dataset", "scenes-captions")
    plain = load(PARAMS, None)
    data = load({**PARAMS, "twins": {"Orientation": 2, "Presence": 1}}, None)
    assert len(data.train) == 12 + 6 and data.test.captions == plain.test.captions
    assert data.train.captions[:12] == plain.train.captions and plain.train.twin_of is None
    assert data.train.twin_of.tolist() == [-1] * 12 + [13, 12, 15, 14, 17, 16]
    assert data.fingerprint != plain.fingerprint
    pairs = [("Orientation", TWIN_FIRST), ("Orientation", TWIN_FIRST + 1), ("Presence", TWIN_FIRST)]
    for p, (kind, k) in enumerate(pairs):
        a, b, sa, sb = make_pair(kind, 0, k, 48)
        for j, (scene, statement) in enumerate(((a, sa), (b, sb))):
            row = 12 + 2 * p + j
            np.testing.assert_array_equal(data.train.images.images[row], render(scene)[0].transpose(2, 0, 1))
            assert data.train.captions[row] == [statement]
            assert data.train.long_captions[row] == long_caption(scene)
            assert data.train.hard_negatives[row] == [sb if j == 0 else sa]
            assert data.train.hard_negative_positives[row] == [statement]
        assert data.train.labels[12 + 2 * p] == data.train.labels[13 + 2 * p]  # the twin with objects labels both
    assert data.train.captions[16:] == [[sa], [sb]] and sb.startswith("there is no ")
    # the training twins never repeat a scenes-mmvp test pair: its pair indices stay below TWIN_FIRST
    from pydantic import ValidationError

    from cl_bench.data.scenes.mmvp_twin import ScenesMMVPParams

    with pytest.raises(ValidationError):
        ScenesMMVPParams(pairs_per_pattern=TWIN_FIRST)
    with pytest.raises(ClBenchError, match="unknown pattern type"):
        load({**PARAMS, "twins": {"Texts": 3}}, None)
    with pytest.raises(ClBenchError, match="needs 1"):
        load({**PARAMS, "twins": {"Orientation": 0}}, None)
