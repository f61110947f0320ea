"""NegCLIP: the loss against the paper's formula written as loops and against a rewrite of the
authors' batching (vinid/neg_clip: images [I; I'], texts [T; T'; H; H'], image->text CE over
all texts, text->image CE over the true captions' rows only), and the objective's batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cl_bench import components
from cl_bench.data.image_text.types import CaptionedImages, ImageList
from cl_bench.errors import ClBenchError
from cl_bench.methods.image_text.losses import clip_loss, negclip_loss
from cl_bench.methods.image_text.negclip import nearest_neighbours
from cl_bench.methods.image_text.trainer import Batch
from cl_bench.specs import TrainRecipe
from tests.methods.image_text.test_image_text_losses import dot, lse, unit

TINY_ARCH = {"embed_dim": 8, "image_width": 4, "text_width": 16, "text_heads": 2, "text_layers": 1}


def test_negclip_loss_matches_the_papers_formula_by_loops() -> None:
    # L = 1/2 [ 1/M sum_i -log e^{s<i_i,t_i>} / (sum_j e^{s<i_i,t_j>} + sum_k e^{s<i_i,h_k>})
    #         + 1/M sum_i -log e^{s<t_i,i_i>} / sum_j e^{s<t_i,i_j>} ]
    m, k, s = 5, 7, 6.0
    img, txt, neg = unit(m, 4, seed=1), unit(m, 4, seed=2), unit(k, 4, seed=3)
    i2t = sum(-s * dot(img[i], txt[i]) + lse([s * dot(img[i], t) for t in [*txt, *neg]]) for i in range(m)) / m
    t2i = sum(-s * dot(txt[i], img[i]) + lse([s * dot(txt[i], img[j]) for j in range(m)]) for i in range(m)) / m
    assert float(negclip_loss(img, txt, neg, s)) == pytest.approx((i2t + t2i) / 2, rel=1e-10)


def test_negclip_loss_matches_a_rewrite_of_the_forks_batching() -> None:
    b, d, s = 3, 6, 10.0
    images, alt_images = unit(b, d, seed=4), unit(b, d, seed=5)
    texts, alt_texts, hard, alt_hard = (unit(b, d, seed=k) for k in (6, 7, 8, 9))
    all_images = torch.cat([images, alt_images])  # [2B, D]
    all_texts = torch.cat([texts, alt_texts, hard, alt_hard])  # [4B, D]
    logits_per_image = s * all_images @ all_texts.T  # [2B, 4B]
    logits_per_text = s * all_texts @ all_images.T  # [4B, 2B]
    labels = torch.arange(2 * b)
    want = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text[: 2 * b], labels)) / 2
    got = negclip_loss(all_images, torch.cat([texts, alt_texts]), torch.cat([hard, alt_hard]), s)
    assert float(got) == pytest.approx(float(want), rel=1e-12)


def test_negclip_without_negatives_is_clip_and_a_true_negative_raises_the_loss() -> None:
    img, txt = unit(6, 5, seed=10), unit(6, 5, seed=11)
    none = torch.zeros(0, 5, dtype=torch.float64)
    assert float(negclip_loss(img, txt, none, 8.0)) == pytest.approx(float(clip_loss(img, txt, 8.0)), rel=1e-12)
    # a negative that looks like image 0 makes image 0's choice harder; t2i does not see it
    near = F.normalize(img[:1] + 0.01 * unit(1, 5, seed=12), dim=-1)
    assert float(negclip_loss(img, txt, near, 8.0)) > float(clip_loss(img, txt, 8.0)) + 0.1
    with pytest.raises(ValueError, match="negatives must be"):
        negclip_loss(img, txt, unit(2, 4), 8.0)


def test_nearest_neighbours_by_hand() -> None:
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    nn_ = nearest_neighbours(z, 1)
    assert nn_[:, 0].tolist() == [1, 0, 3, 2, 2]  # [-1, 0] is closest to [0, 1] (cos 0) of the rest
    two = nearest_neighbours(z, 2)
    assert two[0].tolist() == [1, 3] and 0 not in two[0].tolist()
    with pytest.raises(ValueError, match="neighbours"):
        nearest_neighbours(z, 5)


COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["star", "circle", "square", "cross"]


def tiny_split(n: int = 24, negatives: bool = True) -> CaptionedImages:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    caps, negs, pos = [], [], []
    for i in range(n):
        c, s = COLOURS[i % 4], SHAPES[(i // 4) % 4]
        caps.append([f"a {c} {s}", f"a photo of a {c} {s}"])
        negs.append([f"a {COLOURS[(i + 1) % 4]} {s}", f"a {c} {SHAPES[(i // 4 + 1) % 4]}"] if i % 5 else [])
        pos.append([f"a {c} {s}"] * len(negs[-1]))
    return CaptionedImages(ImageList(images), caps, hard_negatives=negs if negatives else None,
                           hard_negative_positives=pos if negatives else None)


def train(split: CaptionedImages, epochs: int = 2, **params: object):  # -> (model, card)
    torch.manual_seed(0)
    model = components.get("arch", "scene-clip")(TINY_ARCH, in_channels=3, image_size=(32, 32))
    recipe = TrainRecipe(objective="negclip", params=params, epochs=epochs, batch_size=8, optimizer="adamw",
                         lr=1e-3)
    card = components.get("objective", "negclip").train_model(model, recipe, split, 0, 0, torch.device("cpu"))
    return model, card


@pytest.mark.parametrize("hard_images", [0, 2])
def test_negclip_trains_and_counts_its_negatives(hard_images: int) -> None:
    _, card = train(tiny_split(), hard_images=hard_images)
    assert card.steps == 6 and all(np.isfinite(card.loss_curve)) and card.extra["hard_images"] == hard_images
    # every image but those with i % 5 == 0 (5 of 24) has negatives; an epoch's 3 batches of 8 see
    # each image once, so without alternative images exactly 19 of 24 anchors bring a negative
    if hard_images == 0:
        assert card.extra["negatives_per_image"] == round(19 / 24, 4)
    else:
        assert 0.5 < card.extra["negatives_per_image"] <= 1.0


class Spy(torch.nn.Module):
    """Records what the objective feeds the towers; image i embeds as one-hot-ish row i."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_scale = torch.nn.Parameter(torch.tensor(0.0))
        self.seen_images: torch.Tensor | None = None
        self.seen_texts: list[str] = []

    def image_features(self, x: torch.Tensor):
        self.seen_images = x
        return x.flatten(1)[:, :4].float() + 0 * self.logit_scale, None

    def text_features(self, texts: list[str]):
        self.seen_texts = list(texts)
        return torch.randn(len(texts), 4, generator=torch.Generator().manual_seed(len(texts))), None

    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :4].float()


def test_a_step_brings_alternative_images_their_captions_and_one_negative_each() -> None:
    n = 6
    images = torch.zeros(n, 1, 2, 2)
    for i in range(n):
        images[i, 0, 0, i % 2] = 1.0 + i  # 0, 2, 4 alike; 1, 3, 5 alike
    captions = [f"cap {i}" for i in range(n)]
    negatives = [[f"neg {i} a", f"neg {i} b"] for i in range(n)]
    objective = components.get("objective", "negclip")(hard_images=1, paired_positives=False)
    spy = Spy()
    objective.start_epoch(spy, images, captions, 0)
    ids = torch.tensor([0, 3])
    batch = Batch(ids, images[ids], [captions[0], captions[3]], None, lambda x: x, torch.Generator().manual_seed(0),
                  negatives)
    loss, _ = objective.loss(spy, batch)
    assert torch.isfinite(loss)
    alt = objective._neighbours[ids, 0].tolist()
    assert alt[0] in (2, 4) and alt[1] in (1, 5)  # the nearest other image of the same column
    assert torch.equal(spy.seen_images, torch.cat([images[ids], images[torch.tensor(alt)]]))
    texts = spy.seen_texts
    assert texts[:4] == ["cap 0", "cap 3", f"cap {alt[0]}", f"cap {alt[1]}"]
    assert len(texts) == 8
    for owner, neg in zip([0, 3, *alt], texts[4:]):
        assert neg in negatives[owner]


def test_paired_positives_make_each_anchor_say_the_caption_its_negative_swaps() -> None:
    """As the fork's CSV rows (caption, its own negative): the anchor's text in the step is the
    positive of the negative drawn for it; the negatives drawn are those of the unpaired draw
    (the same generator calls); an image without negatives keeps the epoch's caption."""
    n = 6
    images = torch.zeros(n, 1, 2, 2)
    for i in range(n):
        images[i, 0, 0, i % 2] = 1.0 + i
    captions = [f"cap {i}" for i in range(n)]
    negatives = [[f"neg {i} a", f"neg {i} b"] if i != 4 else [] for i in range(n)]
    positives = [[f"pos {i} a", f"pos {i} b"] if i != 4 else [] for i in range(n)]
    ids = torch.tensor([0, 3, 4])
    seen = {}
    for paired in (True, False):
        objective = components.get("objective", "negclip")(hard_images=0, paired_positives=paired)
        spy = Spy()
        objective.start_epoch(spy, images, captions, 0)
        batch = Batch(ids, images[ids], [captions[i] for i in ids.tolist()], None, lambda x: x,
                      torch.Generator().manual_seed(3), negatives, positives)
        objective.loss(spy, batch)
        seen[paired] = spy.seen_texts
    texts = seen[True]
    assert len(texts) == 5 and texts[2] == "cap 4" and texts[3:] == seen[False][3:]
    for slot, owner in enumerate([0, 3]):
        neg = texts[3 + slot]
        assert neg in negatives[owner] and texts[slot] == positives[owner][negatives[owner].index(neg)]
    assert seen[False][:3] == ["cap 0", "cap 3", "cap 4"]
    with pytest.raises(ClBenchError, match="paired_positives: false"):
        objective = components.get("objective", "negclip")(hard_images=0)
        objective.start_epoch(Spy(), images, captions, 0)
        objective.loss(Spy(), Batch(ids, images[ids], ["a", "b", "c"], None, lambda x: x,
                                    torch.Generator().manual_seed(0), negatives))


def test_all_negatives_brings_every_negative_of_every_image() -> None:
    n = 4
    images = torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    captions = [f"cap {i}" for i in range(n)]
    negatives = [[f"neg {i} a", f"neg {i} b"] if i != 2 else [] for i in range(n)]
    objective = components.get("objective", "negclip")(hard_images=0, all_negatives=True)
    spy = Spy()
    objective.start_epoch(spy, images, captions, 0)
    ids = torch.tensor([1, 2, 3])
    batch = Batch(ids, images[ids], [captions[i] for i in ids.tolist()], None, lambda x: x,
                  torch.Generator().manual_seed(0), negatives)
    objective.loss(spy, batch)
    assert spy.seen_images.shape[0] == 3
    assert spy.seen_texts == ["cap 1", "cap 2", "cap 3", "neg 1 a", "neg 1 b", "neg 3 a", "neg 3 b"]


def test_negclip_needs_hard_negatives_and_enough_images() -> None:
    with pytest.raises(ClBenchError, match="hard-negative captions"):
        train(tiny_split(negatives=False))
    with pytest.raises(ClBenchError, match="hard_images 30"):
        train(tiny_split(), hard_images=30)


def test_a_subset_keeps_each_negative_with_its_positive() -> None:
    from cl_bench.data.subsets import take

    split = tiny_split()
    pick = np.array([7, 2, 11])
    sub = take(split, pick)
    assert sub.hard_negatives == [split.hard_negatives[i] for i in pick]
    assert sub.hard_negative_positives == [split.hard_negative_positives[i] for i in pick]
    with pytest.raises(ValueError, match="one positive per hard negative"):
        CaptionedImages(split.images, split.captions, hard_negatives=split.hard_negatives,
                        hard_negative_positives=[p[:1] for p in split.hard_negative_positives])
