"""Zero-shot classification against an explicit loop (template ensembling, ties, top-5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cl_bench import components
from cl_bench.data.image_text.types import CaptionedImageData, CaptionedImages, ImageList
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.image_text import ImageTextEncoder
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.zero_shot import ZeroShotParams, label_ranks, zero_shot_scores


class HashEncoder(ImageTextEncoder):
    """Images: a fixed random projection of the pixels; texts: a sum of per-word random vectors."""

    embed_dim = 8

    def __init__(self, pixels: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(pixels, self.embed_dim, generator=g)
        self.words: dict[str, torch.Tensor] = {}

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(images.flatten(1) @ self.proj, dim=-1)

    def _word(self, w: str) -> torch.Tensor:
        if w not in self.words:
            g = torch.Generator().manual_seed(sum(ord(c) * 31**i for i, c in enumerate(w)) % 2**31)
            self.words[w] = torch.randn(self.embed_dim, generator=g)
        return self.words[w]

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.stack([sum(self._word(w) for w in t.split()) for t in texts]), -1)


def ctx() -> RunContext:
    return RunContext(torch.device("cpu"), 0, lambda m, s: m.embed_split(s, torch.device("cpu")))


def toy(n: int, n_classes: int, templates: list[str] | None) -> CaptionedImageData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, n_classes, n)
    split = CaptionedImages(ImageList(images), [["x"]] * n, labels=labels)
    names = [f"class{c}" for c in range(n_classes)]
    return CaptionedImageData("toy", None, split, class_names=names, templates=templates)


def explicit(model: HashEncoder, data: CaptionedImageData, templates: list[str]) -> dict[str, float]:
    """Loops: per class, normalise every prompt embedding, average, renormalise; per image, cosine."""
    ws = []
    for name in data.class_names:
        vecs = [model.embed_texts([t.format(name)])[0].double() for t in templates]
        vecs = [v / v.norm() for v in vecs]
        m = sum(vecs) / len(vecs)
        ws.append(m / m.norm())
    top1 = top5 = 0
    per: dict[int, list[int]] = {}
    for i in range(len(data.test)):
        x = model.embed_images(data.test.images.tensor(slice(i, i + 1)))[0].double()
        x = x / x.norm()
        s = [float(x @ w) for w in ws]
        y = int(data.test.labels[i])
        order = sorted(range(len(s)), key=lambda c: (-s[c], c))
        top1 += order[0] == y
        top5 += y in order[:5]
        per.setdefault(y, []).append(int(order[0] == y))
    n = len(data.test)
    return {"top1": 100 * top1 / n, "top5": 100 * top5 / n,
            "mean_per_class_recall": float(np.mean([100 * np.mean(v) for v in per.values()]))}


@pytest.mark.parametrize("n_classes", [4, 9])
def test_matches_explicit_loop(n_classes):
    templates = ["a photo of a {}.", "a {} on the street.", "{}"]
    data = toy(60, n_classes, templates)
    model = HashEncoder(48)
    proto = components.get("protocol", "zero_shot")
    assert proto.requires == "image_text"
    res = proto.run(model, data, ZeroShotParams(), ctx())
    want = explicit(model, data, templates)
    assert res.metrics["top1"] == pytest.approx(want["top1"])
    assert res.metrics["mean_per_class_recall"] == pytest.approx(want["mean_per_class_recall"])
    if n_classes > 5:
        assert res.metrics["top5"] == pytest.approx(want["top5"])
    else:
        assert "top5" not in res.metrics
    assert res.extras["n_templates"] == 3
    # the task's templates override the dataset's
    res2 = proto.run(model, data, ZeroShotParams(templates=["{}"]), ctx())
    assert res2.metrics["top1"] == pytest.approx(explicit(model, data, ["{}"])["top1"])


def test_ties_go_to_the_lower_class_index():
    scores = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1], [0.2, 0.2, 0.2]])
    labels = np.array([0, 1, 2])
    assert label_ranks(scores, labels).tolist() == [0, 1, 2]
    res = zero_shot_scores(scores, labels, ["a", "b", "c"])
    assert res.metrics["top1"] == pytest.approx(100 / 3)
    assert res.extras["per_class_top1"] == {"a": 100.0, "b": 0.0, "c": 0.0}
    assert math.isclose(res.metrics["mean_per_class_recall"], 100 / 3)


def test_bad_inputs():
    proto = components.get("protocol", "zero_shot")
    model = HashEncoder(48)
    with pytest.raises(ClBenchError, match="no prompt templates"):
        proto.run(model, toy(10, 3, None), ZeroShotParams(), ctx())
    data = toy(10, 3, ["{}"])
    data.class_names = None
    with pytest.raises(ClBenchError, match="no class names"):
        proto.run(model, data, ZeroShotParams(), ctx())
    unlabelled = toy(10, 3, ["{}"])
    unlabelled.test.labels = None
    with pytest.raises(ClBenchError, match="no labels"):
        proto.run(model, unlabelled, ZeroShotParams(), ctx())
    with pytest.raises(ClBenchError, match="labelled images"):
        proto.run(model, object(), ZeroShotParams(), ctx())
    with pytest.raises(Exception, match="exactly one"):
        ZeroShotParams(templates=["no slot"])
