"""The image–text trainer and its six objectives on tiny data; clip end to end through obtain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cl_bench import components
from cl_bench.cache import Cache
from cl_bench.data.scenes.captions import split_sentences
from cl_bench.data.image_text.types import CaptionedImages, ImageList
from cl_bench.errors import ClBenchError
from cl_bench.methods.image_text.objectives import sample_subcaptions
from cl_bench.obtain import obtain_model
from cl_bench.specs import MethodSpec, TrainRecipe

TINY_ARCH = {"embed_dim": 8, "image_width": 4, "text_width": 16, "text_heads": 2, "text_layers": 1}
COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["star", "circle", "square", "cross"]


def tiny_split(n: int = 24, long: bool = True, seed: int = 0) -> CaptionedImages:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    caps, longs = [], []
    for i in range(n):
        c, s = COLOURS[i % 4], SHAPES[(i // 4) % 4]
        caps.append([f"a {c} {s}", f"a photo of a {c} {s}"])
        longs.append(f"a street scene under the sky. there is a {c} {s}. there is one {s}. the {s} is {c}.")
    return CaptionedImages(ImageList(images), caps, long_captions=longs if long else None)


def recipe(objective: str, epochs: int = 1, **params: object) -> TrainRecipe:
    return TrainRecipe(objective=objective, params=params, epochs=epochs, batch_size=8, optimizer="adamw", lr=1e-3,
                       augment={"rotation_deg": 0})


def train(objective: str, arch: dict | None = None, split: CaptionedImages | None = None, epochs: int = 1,
          **params: object):  # -> (model, card)
    torch.manual_seed(0)
    model = components.get("arch", "scene-clip")({**TINY_ARCH, **(arch or {})}, in_channels=3, image_size=(32, 32))
    cls = components.get("objective", objective)
    card = cls.train_model(model, recipe(objective, epochs, **params), split or tiny_split(), 0, 0, torch.device("cpu"))
    return model, card


@pytest.mark.parametrize("objective", ["clip", "dcl-clip", "dreamlip", "tcl"])
def test_objectives_train_with_finite_losses(objective: str) -> None:
    _, card = train(objective, epochs=2)
    assert card.steps == 6 and len(card.loss_curve) == 2 and all(np.isfinite(card.loss_curve))
    want = {"dreamlip": {"multi_positive", "grouping"},
            "tcl": {"i2t", "t2i", "i2i", "t2t", "g2l_image", "g2l_text"}}.get(objective, set())
    assert set(card.loss_parts) == want
    assert card.logit_scale >= 1.0 and card.logit_scale <= 100.0


def test_training_is_deterministic_per_seed() -> None:
    m1, c1 = train("tcl", momentum=0.5)
    m2, c2 = train("tcl", momentum=0.5)
    assert c1.loss_curve == c2.loss_curve
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k


def test_protoclip_clusters_the_episode() -> None:
    _, card = train("protoclip", epochs=2, clusters=4, infonce_warmup_epochs=1)
    assert card.extra["episodes_clustered"] == 1 and set(card.loss_parts) == {"clip", "proto"}
    _, card0 = train("protoclip", epochs=1, clusters=4, infonce_warmup_epochs=1)
    assert card0.extra["episodes_clustered"] == 0 and set(card0.loss_parts) == {"clip"}


def test_mcl_clip_trains_every_stage_on_pseudo_label_groups() -> None:
    model, card = train("mcl-clip", arch={"stages": 2}, split=tiny_split(32), epochs=1, clusters=2, min_group=4)
    stages = card.extra["stages"]
    assert [s["stage"] for s in stages] == [0, 1]
    assert stages[0]["groups"] == 1 and stages[1]["groups"] == 2
    assert model.embed_dim == 16 and len(card.loss_curve) == 2


def test_subcaptions_are_sentences_of_the_long_caption() -> None:
    long = "a street scene. there is a red star. there is a blue circle. the star is left of the circle."
    sentences = split_sentences(long)
    g = torch.Generator().manual_seed(0)
    subs = sample_subcaptions(long, 4, 1, g)
    assert sorted(subs) == sorted(sentences)  # without replacement while there are enough
    two = sample_subcaptions(long, 3, 2, torch.Generator().manual_seed(1))
    for sub in two:
        parts = sub.split(". ")
        assert len(parts) in (1, 2) and all(p in sentences for p in parts)
        assert [sentences.index(p) for p in parts] == sorted(sentences.index(p) for p in parts)
    assert sample_subcaptions(long, 3, 2, torch.Generator().manual_seed(1)) == two


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ClBenchError, match="long captions"):
        train("dreamlip", split=tiny_split(long=False))
    model = components.get("arch", "scene-clip")(TINY_ARCH, in_channels=3, image_size=(32, 32))
    with pytest.raises(ClBenchError, match="captioned images"):
        components.get("objective", "clip").train_model(model, recipe("clip"), object(), 0, 0, torch.device("cpu"))
    with pytest.raises(ClBenchError, match="scene-clip"):
        components.get("objective", "clip").train_model(torch.nn.Linear(2, 2), recipe("clip"), tiny_split(), 0, 0,
                                                        torch.device("cpu"))
    with pytest.raises(ClBenchError, match="subcaptions"):
        train("dreamlip", subcaptions=-1)


def test_clip_end_to_end_through_obtain_on_tiny_scenes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "cache"))
    method = MethodSpec(
        id="tiny-clip", description="test", provides=["image_text"],
        arch={"name": "scene-clip", "params": TINY_ARCH},
        train={"objective": "clip", "epochs": 4, "batch_size": 16, "optimizer": "adamw", "lr": 0.003,
               "data": {"name": "scenes-captions", "params": {"n_train": 64, "n_test": 16, "image_size": 32}}},
    )
    data = components.get("dataset", "scenes-captions")({"n_train": 64, "n_test": 16, "image_size": 32}, None)
    cache = Cache(tmp_path / "cache")
    got = obtain_model(method, data, seed=0, device=torch.device("cpu"), cache=cache)
    assert got.source == "trained" and not got.reused
    curve = got.card["loss_curve"]
    assert len(curve) == 4 and curve[-1] < curve[0]
    again = obtain_model(method, data, seed=0, device=torch.device("cpu"), cache=cache)
    assert again.reused and again.fingerprint == got.fingerprint
    with torch.no_grad():
        emb = got.model.embed_texts(data.test.captions[0])
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(emb)), atol=1e-5)


def test_twin_batches_keep_pairs_together_and_fill_every_batch() -> None:
    from cl_bench.methods.image_text.trainer import twin_batches

    twin_of = np.full(45, -1)
    for i in range(15, 45, 2):  # 15 singles, then 15 pairs
        twin_of[i], twin_of[i + 1] = i + 1, i
    counts = []
    for seed in range(20):
        batches = twin_batches(twin_of, 8, torch.Generator().manual_seed(seed))
        assert len(batches) in (4, 5) and all(len(b) == 8 for b in batches)
        counts.append(len(batches))
        flat = torch.cat(batches).tolist()
        assert len(set(flat)) == len(flat)
        where = {i: k for k, b in enumerate(batches) for i in b.tolist()}
        assert all(where.get(int(twin_of[i])) == k for i, k in where.items() if twin_of[i] >= 0)
    assert counts.count(5) > 10  # a pair waits for one slot only while singles are left
    again = twin_batches(twin_of, 8, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(again, twin_batches(twin_of, 8, torch.Generator().manual_seed(3))))


def test_clip_trains_on_a_split_with_twins() -> None:
    split = tiny_split(24)
    twins = CaptionedImages(split.images, split.captions, long_captions=split.long_captions,
                            twin_of=np.asarray([k ^ 1 if k >= 8 else -1 for k in range(24)]))
    _, card = train("clip", split=twins, epochs=2)
    assert card.steps == 6 and all(np.isfinite(card.loss_curve))
    with pytest.raises(ValueError, match="symmetrically"):
        CaptionedImages(split.images, split.captions, twin_of=np.asarray([1, 2] + [-1] * 22))


def test_a_subset_keeps_the_twins_it_holds_both_of() -> None:
    from cl_bench.data.subsets import take

    split = tiny_split(8)
    twins = CaptionedImages(split.images, split.captions, twin_of=np.asarray([-1, -1, 3, 2, 5, 4, 7, 6]))
    sub = take(twins, np.array([5, 0, 4, 6]))
    assert sub.twin_of.tolist() == [2, -1, 0, -1]  # 6's twin (7) is not in the subset


def test_mcl_clip_groups_keep_twins_in_one_batch() -> None:
    from cl_bench.methods.image_text.mcl_clip import twin_group_batches

    twin_of = np.full(60, -1)
    for i in range(20, 60, 2):
        twin_of[i], twin_of[i + 1] = i + 1, i
    groups = np.random.default_rng(0).integers(0, 3, 60)  # a pair's images may sit in different clusters
    batches = twin_group_batches(groups, twin_of, 8, 4, torch.Generator().manual_seed(0))
    where = {i: k for k, b in enumerate(batches) for i in b.tolist()}
    assert sum(len(b) for b in batches) >= 40
    assert all(where.get(int(twin_of[i])) == k for i, k in where.items() if twin_of[i] >= 0)
    moved = groups.copy()
    moved[21:60:2] = groups[20:60:2]
    assert all(len({int(moved[i]) for i in b.tolist()}) == 1 for b in batches)  # one group per batch
