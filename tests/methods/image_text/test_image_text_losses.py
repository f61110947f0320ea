"""Image–text losses against explicit loop formulas on random tensors, plus known properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cl_bench.methods.image_text.losses import (
    back_translate,
    clip_loss,
    dcl_clip_loss,
    dcl_from_logits,
    global_local_loss,
    group_patches,
    grouping_loss,
    info_nce,
    multi_positive_clip_loss,
    prototype_loss,
)


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def lse(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


# --- clip -----------------------------------------------------------------------------------------
def clip_by_loops(img: torch.Tensor, txt: torch.Tensor, s: float) -> float:
    n = len(img)
    i2t = sum(-s * dot(img[i], txt[i]) + lse([s * dot(img[i], txt[j]) for j in range(n)]) for i in range(n)) / n
    t2i = sum(-s * dot(txt[i], img[i]) + lse([s * dot(txt[i], img[j]) for j in range(n)]) for i in range(n)) / n
    return (i2t + t2i) / 2


def test_clip_loss_matches_loops_and_is_symmetric() -> None:
    img, txt = unit(7, 5, seed=1), unit(7, 5, seed=2)
    got = float(clip_loss(img, txt, 9.0))
    assert got == pytest.approx(clip_by_loops(img, txt, 9.0), rel=1e-10)
    assert float(clip_loss(txt, img, 9.0)) == pytest.approx(got, rel=1e-12)


def test_clip_loss_of_perfect_pairs_tends_to_zero() -> None:
    z = torch.eye(4, dtype=torch.float64)
    assert float(clip_loss(z, z, 100.0)) < 1e-30 + 4 * math.exp(-100) * 2


def test_clip_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="must both be"):
        clip_loss(unit(3, 4), unit(4, 4), 1.0)


# --- dcl-clip -------------------------------------------------------------------------------------
def test_dcl_clip_matches_loops() -> None:
    img, txt, s = unit(6, 4, seed=3), unit(6, 4, seed=4), 5.0
    n = 6
    i2t = sum(-s * dot(img[i], txt[i]) + lse([s * dot(img[i], txt[j]) for j in range(n) if j != i]) for i in range(n))
    t2i = sum(-s * dot(txt[i], img[i]) + lse([s * dot(txt[i], img[j]) for j in range(n) if j != i]) for i in range(n))
    assert float(dcl_clip_loss(img, txt, s)) == pytest.approx((i2t + t2i) / (2 * n), rel=1e-10)


def test_dcl_clip_has_no_positive_in_its_denominator() -> None:
    # Raising every positive logit by d lowers the loss by exactly d (CLIP's loss by less).
    logits = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for d in (0.5, 3.0, 20.0):
        shifted = logits + d * torch.eye(5, dtype=torch.float64)
        assert float(dcl_from_logits(logits) - dcl_from_logits(shifted)) == pytest.approx(d, rel=1e-10)
    clip_drop = float(
        F.cross_entropy(logits, torch.arange(5)) - F.cross_entropy(logits + 3 * torch.eye(5, dtype=torch.float64), torch.arange(5))
    )
    assert clip_drop < 3.0


def test_dcl_clip_needs_two_pairs() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        dcl_clip_loss(unit(1, 3), unit(1, 3), 1.0)


# --- dreamlip -------------------------------------------------------------------------------------
def test_multi_positive_matches_loops() -> None:
    n, k, s = 4, 3, 6.0
    img, txt = unit(n, 5, seed=6), unit(n, k, 5, seed=7)
    texts = [(j, c) for j in range(n) for c in range(k)]
    i2t = 0.0
    for i in range(n):
        den = lse([s * dot(img[i], txt[j, c]) for j, c in texts])
        i2t += sum(-(s * dot(img[i], txt[i, c]) - den) for c in range(k)) / k
    t2i = 0.0
    for j, c in texts:
        t2i += -s * dot(txt[j, c], img[j]) + lse([s * dot(txt[j, c], img[m]) for m in range(n)])
    want = (i2t / n + t2i / (n * k)) / 2
    assert float(multi_positive_clip_loss(img, txt, s)) == pytest.approx(want, rel=1e-10)


def test_multi_positive_with_one_subcaption_equals_clip() -> None:
    img, txt = unit(6, 8, seed=8), unit(6, 8, seed=9)
    assert float(multi_positive_clip_loss(img, txt[:, None], 7.0)) == pytest.approx(float(clip_loss(img, txt, 7.0)), rel=1e-12)


def test_grouping_matches_loops() -> None:
    n, k, m, d, s, thr = 3, 2, 5, 4, 4.0, 0.3
    sub, patches = unit(n, k, d, seed=10), unit(n, m, d, seed=11)
    grouped = torch.zeros(n, k, d, dtype=torch.float64)
    for i in range(n):
        for c in range(k):
            sims = [dot(sub[i, c], patches[i, p]) for p in range(m)]
            lo, hi = min(sims), max(sims)
            w = [(x - lo) / (hi - lo + 1e-10) for x in sims]
            w = [0.0 if x < thr else x for x in w]
            v = sum(w[p] / sum(w) * patches[i, p] for p in range(m))
            grouped[i, c] = v / v.norm()
    assert torch.allclose(group_patches(sub, patches, thr), grouped, atol=1e-12)
    want = clip_by_loops(grouped.reshape(-1, d), sub.reshape(-1, d), s)
    assert float(grouping_loss(sub, patches, s, thr)) == pytest.approx(want, rel=1e-10)


def test_grouping_with_threshold_near_one_keeps_the_best_patch() -> None:
    sub, patches = unit(2, 3, 6, seed=12), unit(2, 7, 6, seed=13)
    best = torch.einsum("nkd,nmd->nkm", sub, patches).argmax(dim=-1)
    want = torch.stack([patches[i, best[i]] for i in range(2)])
    assert torch.allclose(group_patches(sub, patches, 0.999), want, atol=1e-12)


# --- protoclip ------------------------------------------------------------------------------------
def test_back_translate_is_the_mean_over_teacher_clusters() -> None:
    feats = unit(6, 3, seed=14)
    labels = torch.tensor([2, 0, 2, 2, 0, 3])
    got = back_translate(labels, feats, 5)
    for c in range(5):
        members = [feats[i] for i in range(6) if int(labels[i]) == c]
        want = sum(members) / len(members) if members else torch.zeros(3, dtype=torch.float64)
        assert torch.allclose(got[c], want, atol=1e-12)


@pytest.mark.parametrize("temperature", [0.0, 0.05])
def test_prototype_loss_matches_loops(temperature: float) -> None:
    n, k, s = 5, 3, 8.0
    student, sp, tp = unit(n, 4, seed=15), unit(k, 4, seed=16), unit(k, 4, seed=17)
    labels = torch.tensor([0, 2, 1, 2, 0])
    total = 0.0
    for i in range(n):
        logits = [s * dot(student[i], sp[c]) for c in range(k)]
        logp = [x - lse(logits) for x in logits]
        if temperature > 0:
            t = [dot(tp[int(labels[i])], tp[c]) / temperature for c in range(k)]
            q = [math.exp(x - lse(t)) for x in t]
        else:
            q = [1.0 if c == int(labels[i]) else 0.0 for c in range(k)]
        total += -sum(q[c] * logp[c] for c in range(k))
    got = prototype_loss(student, sp, tp, labels, s, temperature)
    assert float(got) == pytest.approx(total / n, rel=1e-10)


def test_prototype_loss_with_one_prototype_per_sample_is_clip() -> None:
    # Without back translation the image's prototypes are the text prototypes; with one
    # cluster per sample they are the text features, and hard targets make both directions
    # of ProtoCLIP's prototype loss exactly CLIP's two InfoNCE directions.
    img, txt, s = unit(6, 5, seed=18), unit(6, 5, seed=19), 5.0
    labels = torch.arange(6)
    i2t = prototype_loss(img, txt, txt, labels, s, 0.0)
    t2i = prototype_loss(txt, img, img, labels, s, 0.0)
    assert float((i2t + t2i) / 2) == pytest.approx(float(clip_loss(img, txt, s)), rel=1e-12)


# --- tcl ------------------------------------------------------------------------------------------
def g2l_by_loops(local: torch.Tensor, glob: torch.Tensor, t: float, mask: torch.Tensor) -> float:
    n, m, _ = local.shape
    total = 0.0
    for i in range(n):
        real = [p for p in range(m) if mask[i, p]]
        negs = [dot(local[j, q], glob[i]) / t for j in range(n) if j != i for q in range(m) if mask[j, q]]
        terms = []
        for p in real:
            pos = dot(local[i, p], glob[i]) / t
            terms.append(-(pos - lse([pos, *negs])))
        total += sum(terms) / len(terms)
    return total / n


def test_global_local_matches_loops_with_padding_mask() -> None:
    local, glob = unit(4, 5, 3, seed=20), unit(4, 3, seed=21)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    got = global_local_loss(local, glob, 0.2, mask)
    assert float(got) == pytest.approx(g2l_by_loops(local, glob, 0.2, mask), rel=1e-10)
    # padded locals change nothing
    noisy = local.clone()
    noisy[0, 3:] = unit(2, 3, seed=22)
    assert float(global_local_loss(noisy, glob, 0.2, mask)) == pytest.approx(float(got), rel=1e-12)


def test_global_local_with_one_local_is_info_nce() -> None:
    local, glob = unit(5, 4, seed=23), unit(5, 4, seed=24)
    got = global_local_loss(local[:, None], glob, 0.1)
    assert float(got) == pytest.approx(float(info_nce(glob, local, 0.1)), rel=1e-12)


def test_info_nce_matches_loops() -> None:
    a, b, t = unit(5, 3, seed=25), unit(5, 3, seed=26), 0.3
    want = sum(-dot(a[i], b[i]) / t + lse([dot(a[i], b[j]) / t for j in range(5)]) for i in range(5)) / 5
    assert float(info_nce(a, b, t)) == pytest.approx(want, rel=1e-10)
