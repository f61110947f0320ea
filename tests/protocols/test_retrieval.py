"""Retrieval Recall@K: a hand-worked example, exact ties, and a naive full-matrix reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cl_bench import components
from cl_bench.data.image_text.types import CaptionedImageData, CaptionedImages, ImageList
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.image_text import ImageTextEncoder
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.retrieval import (
    RetrievalParams,
    rank_and_retrieve,
    recalls,
    retrieval_predictions,
    retrieval_ranks,
)


def naive_ranks(T: np.ndarray, I: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full similarity matrix and explicit sorts by (-score, index); images: captions ordered by
    (owner, caption index), the image's other captions removed."""
    S = T.astype(np.float64) @ I.astype(np.float64).T
    t2i = np.empty(len(T), np.int64)
    for t in range(len(T)):
        order = sorted(range(len(I)), key=lambda j: (-S[t, j], j))
        t2i[t] = order.index(owner[t])
    i2t = np.empty(len(I), np.int64)
    for i in range(len(I)):
        order = sorted(range(len(T)), key=lambda c: (-S[c, i], owner[c], c))
        first = next(p for p, c in enumerate(order) if owner[c] == i)
        i2t[i] = sum(owner[c] != i for c in order[:first])
    return t2i, i2t


# images: I0=(1,0) I1=(0,1) I2=(.6,.8); captions (owner): c0=(1,0)(0) c1=(0,1)(0) c2=(.8,.6)(1)
# c3=(.6,.8)(2) c4=(-1,0)(2). Scores caption x image:
#   c0: 1, 0, .6    c1: 0, 1, .8    c2: .8, .6, .96    c3: .6, .8, 1    c4: -1, 0, -.6
# t2i rank of the own image: c0 0, c1 2 (I1, I2 above), c2 2, c3 0, c4 1 (I1 above)
# i2t rank of the best own caption among other images' captions:
#   I0: best c0 (1) -> 0;  I1: own c2 (.6), above: c1 (1), c3 (.8) -> 2;  I2: best c3 (1) -> 0
HAND_I = np.array([[1, 0], [0, 1], [0.6, 0.8]], np.float32)
HAND_T = np.array([[1, 0], [0, 1], [0.8, 0.6], [0.6, 0.8], [-1, 0]], np.float32)
HAND_OWNER = np.array([0, 0, 1, 2, 2])


@pytest.mark.parametrize("block", [16, 4096])
def test_hand_worked_example(block):
    t2i, i2t = retrieval_ranks(HAND_T, HAND_I, HAND_OWNER, block)
    assert t2i.tolist() == [0, 2, 2, 0, 1]
    assert i2t.tolist() == [0, 2, 0]
    r = recalls(t2i, i2t, [1, 2, 3])
    assert r["t2i_r1"] == pytest.approx(40.0) and r["t2i_r2"] == pytest.approx(60.0)
    assert r["t2i_r3"] == pytest.approx(100.0)
    assert r["i2t_r1"] == pytest.approx(200 / 3) and r["i2t_r2"] == pytest.approx(200 / 3)
    assert r["i2t_r3"] == pytest.approx(100.0)
    assert r["rsum"] == pytest.approx((40 + 60 + 100) + (200 / 3 + 200 / 3 + 100))
    assert r["mean_recall"] == pytest.approx(r["rsum"] / 6)


def test_all_ties_go_to_the_lower_index():
    I = np.ones((3, 2), np.float32)
    T = np.ones((5, 2), np.float32)
    t2i, i2t = retrieval_ranks(T, I, HAND_OWNER, 16)
    assert t2i.tolist() == [0, 0, 1, 2, 2]  # images before the own image come first
    assert i2t.tolist() == [0, 2, 3]  # captions of earlier images come first


@pytest.mark.parametrize("block", [16, 37, 4096])
def test_matches_naive_on_random_and_integer_data(block):
    rng = np.random.default_rng(0)
    n_i = 70
    owner = np.concatenate([np.arange(n_i), rng.integers(0, n_i, 130)])
    rng.shuffle(owner)  # captions not grouped by image: the stable regrouping is exercised
    I = rng.normal(size=(n_i, 8)).astype(np.float32)
    T = (I[owner] + rng.normal(scale=1.0, size=(len(owner), 8))).astype(np.float32)
    got = retrieval_ranks(T, I, owner, block)
    want = naive_ranks(T, I, owner)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    # small integers: every product is exact in float32, so ties are frequent and exact
    Ii = rng.integers(-1, 2, size=(n_i, 3)).astype(np.float32)
    Ti = rng.integers(-1, 2, size=(len(owner), 3)).astype(np.float32)
    got = retrieval_ranks(Ti, Ii, owner, block)
    want = naive_ranks(Ti, Ii, owner)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("block", [16, 37])
def test_top1_matches_naive_and_is_right_exactly_at_rank_zero(block):
    rng = np.random.default_rng(2)
    n_i = 40
    owner = np.concatenate([np.arange(n_i), rng.integers(0, n_i, 60)])
    rng.shuffle(owner)
    for I, T in ((rng.normal(size=(n_i, 6)), None), (rng.integers(-1, 2, size=(n_i, 3)), 3)):
        I = I.astype(np.float32)
        T = (I[owner] + rng.normal(size=I[owner].shape)) if T is None else rng.integers(-1, 2, size=(len(owner), T))
        T = T.astype(np.float32)
        r = rank_and_retrieve(T, I, owner, block)
        S = T.astype(np.float64) @ I.astype(np.float64).T
        want_t = [min(range(n_i), key=lambda j: (-S[t, j], j)) for t in range(len(T))]
        want_i = [min(range(len(T)), key=lambda c: (-S[c, i], owner[c], c)) for i in range(n_i)]
        assert r.t2i_top1.tolist() == want_t and r.i2t_top1.tolist() == want_i
        np.testing.assert_array_equal(r.t2i == 0, r.t2i_top1 == owner)
        np.testing.assert_array_equal(r.i2t == 0, r.i2t_top1 == r.i2t_best)
        assert (owner[r.i2t_best] == np.arange(n_i)).all()


def test_protocol_stores_r1_verdicts_for_both_directions():
    # the hand-worked example through the protocol: t2i top-1 images c0..c4 -> I0, I1, I2, I2, I1;
    # i2t top-1 captions I0..I2 -> c0, c1, c3 (I1's best own caption is c2)
    split = CaptionedImages(ImageList(np.zeros((3, 3, 2, 2), np.float32)), [["c0", "c1"], ["c2"], ["c3", "c4"]])
    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: HAND_I if isinstance(s, ImageList) else HAND_T)
    res = components.get("protocol", "retrieval").run(None, CaptionedImageData("toy", None, split),
                                                      RetrievalParams(ks=[5]), ctx)
    p = res.predictions
    assert p.item.tolist() == ["i2t:0", "i2t:1", "i2t:2", "t2i:0", "t2i:1", "t2i:2", "t2i:3", "t2i:4"]
    assert len(set(p.item.tolist())) == 3 + 5
    assert p.pred.tolist() == [0, 1, 3, 0, 1, 2, 2, 1] and p.target.tolist() == [0, 2, 3, 0, 0, 1, 2, 2]
    i2t = np.char.startswith(p.item.astype(str), "i2t:")
    r1 = recalls(*retrieval_ranks(HAND_T, HAND_I, HAND_OWNER), [1])  # R@1 although ks has no 1
    assert 100 * p.correct[i2t].mean() == pytest.approx(r1["i2t_r1"]) == pytest.approx(200 / 3)
    assert 100 * p.correct[~i2t].mean() == pytest.approx(r1["t2i_r1"]) == pytest.approx(40.0)
    np.testing.assert_array_equal(p.correct, p.pred == p.target)
    assert retrieval_predictions(rank_and_retrieve(HAND_T, HAND_I, HAND_OWNER), HAND_OWNER).item.tolist() == p.item.tolist()


def test_recall_matches_topk_without_ties():
    rng = np.random.default_rng(1)
    I = rng.normal(size=(50, 16)).astype(np.float32)
    owner = np.repeat(np.arange(50), 5)
    T = (I[owner] + rng.normal(scale=2.0, size=(250, 16))).astype(np.float32)
    t2i, i2t = retrieval_ranks(T, I, owner, 32)
    S = torch.from_numpy(T) @ torch.from_numpy(I).T
    for k in (1, 5, 10):
        top = S.topk(k, dim=1).indices.numpy()
        assert np.mean(t2i < k) == np.mean([owner[t] in top[t] for t in range(250)])
        top_t = S.T.topk(k, dim=1).indices.numpy()
        assert np.mean(i2t < k) == np.mean([(owner[top_t[i]] == i).any() for i in range(50)])


def test_bad_inputs():
    with pytest.raises(ClBenchError, match="at least one caption"):
        retrieval_ranks(HAND_T[:2], HAND_I, np.array([0, 0]))
    with pytest.raises(ClBenchError, match="image index"):
        retrieval_ranks(HAND_T, HAND_I, np.array([0, 0, 1, 2, 3]))
    with pytest.raises(ClBenchError, match="one D"):
        retrieval_ranks(HAND_T, np.ones((3, 3), np.float32), HAND_OWNER)
    bad = HAND_T.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ClBenchError, match="NaN"):
        retrieval_ranks(bad, HAND_I, HAND_OWNER)
    with pytest.raises(Exception, match="distinct positive"):
        RetrievalParams(ks=[0, 5])


class LookupEncoder(ImageTextEncoder):
    """Images: the first pixel's channels; texts: a fixed vector per known string."""

    embed_dim = 3

    def __init__(self, table: dict[str, list[float]]) -> None:
        super().__init__()
        self.table = table

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(images[:, :, 0, 0] - 0.5, dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.tensor([self.table[t] for t in texts]), dim=-1)


def test_protocol_end_to_end_with_a_tiny_encoder():
    colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    images = np.broadcast_to((colours * 0.5 + 0.5)[:, :, None, None], (3, 3, 4, 4)).copy()
    table = {"red": [1, 0, 0], "green": [0, 1, 0], "blue": [0, 0, 1], "greenish": [0.1, 1, 0],
             "not blue": [1, 1, -1]}
    split = CaptionedImages(ImageList(images), [["red", "not blue"], ["green", "greenish"], ["blue"]])
    data = CaptionedImageData("toy", None, split)
    enc = LookupEncoder(table)
    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: m.embed_split(s, torch.device("cpu")))
    proto = components.get("protocol", "retrieval")
    assert proto.requires == "image_text"
    res = proto.run(enc, data, RetrievalParams(ks=[1, 2]), ctx)
    # t2i: every caption's own image is its top-1; "not blue" scores red .577 = green .577 > blue,
    # and its own image 0 wins the tie by the lower index -> all hits
    assert res.metrics["t2i_r1"] == pytest.approx(100.0)
    # i2t: image 0 best own caption "red" (1.0) first; image 1 "green" (1.0); image 2 "blue" (1.0)
    assert res.metrics["i2t_r1"] == pytest.approx(100.0)
    assert res.extras["n_captions"] == 5 and res.extras["n_images"] == 3
    with pytest.raises(ClBenchError, match="captioned images"):
        proto.run(enc, object(), RetrievalParams(), ctx)
