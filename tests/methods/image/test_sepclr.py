"""SepCLR: loss terms against loops and their properties, the digits-salient pair, the separation protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cl_bench import components
from cl_bench.data.image.digits_hard import render_digits_hard
from cl_bench.data.image.digits_salient import DigitsSalientParams, grating, render_digits_salient
from cl_bench.errors import ClBenchError
from cl_bench.methods.image.sepclr import sepclr_loss
from cl_bench.methods.trainer import train_encoder
from cl_bench.protocols.salient_separation import (
    SalientSeparationParams,
    balanced_accuracy,
    probe_balanced_accuracy,
    separation_metrics,
)
from cl_bench.specs import TrainRecipe

# ---------------------------------------------------------------- loss


def _rows(x: torch.Tensor) -> list[list[float]]:
    return [[float(v) for v in r] for r in x]


def _unit_rows(x: torch.Tensor) -> list[list[float]]:
    return [[v / math.sqrt(sum(a * a for a in r)) for v in r] for r in _rows(x)]


def _d2(a: list[float], b: list[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b))


def ref_sepclr(hc1, hc2, hs1, hs2, target, tau, wu, bs, br, lam):  # type: ignore[no-untyped-def]
    c1, c2 = _unit_rows(hc1), _unit_rows(hc2)
    s1, s2 = _rows(hs1), _rows(hs2)
    n = len(c1)
    zero = [0.0] * len(s1[0])
    p1 = [s1[i] if target[i] else zero for i in range(n)]
    p2 = [s2[i] if target[i] else zero for i in range(n)]

    def align(xs, ys):  # type: ignore[no-untyped-def]
        return sum(_d2(x, y) for x, y in zip(xs, ys)) / (2 * tau) / len(xs) if xs else 0.0

    def uniform(xs):  # type: ignore[no-untyped-def]
        pairs = [math.exp(-_d2(xs[i], xs[j]) / (2 * tau)) for i in range(len(xs)) for j in range(i + 1, len(xs))]
        return math.log(sum(pairs) / len(pairs))

    def jem(cs, ss):  # type: ignore[no-untyped-def]
        return sum(
            math.log(sum(math.exp(-_d2(cs[i], cs[j]) / (2 * tau)) * math.exp(-_d2(ss[i], ss[j]) / (2 * tau)) for j in range(n)) / n)
            for i in range(n)
        ) / n

    t = [i for i in range(n) if target[i]]
    b = [i for i in range(n) if not target[i]]
    common = align(c1, c2) + wu * (uniform(c1) + uniform(c2)) / 2
    salient = align([s1[i] for i in t], [s2[i] for i in t]) + wu * (uniform(p1) + uniform(p2)) / 2
    info_less = (align([zero] * len(b), [s1[i] for i in b]) + align([zero] * len(b), [s2[i] for i in b])) / 2
    j = (jem(c1, p1) + jem(c2, p2)) / 2
    return common + bs * salient + br * info_less + lam * j


def _heads(n: int = 7, dc: int = 4, ds: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, d, generator=g, dtype=torch.float64) * 0.7 for d in (dc, dc, ds, ds))


@pytest.mark.parametrize("weights", [(2.0, 1000.0, 1000.0, 10.0), (1.0, 0.5, 3.0, 0.1)])
def test_sepclr_loss_matches_loops(weights: tuple[float, float, float, float]) -> None:
    hc1, hc2, hs1, hs2 = _heads()
    target = torch.tensor([1, 0, 1, 1, 0, 0, 1])
    got = sepclr_loss(hc1, hc2, hs1, hs2, target, 0.5, *weights)["total"]
    assert float(got) == pytest.approx(ref_sepclr(hc1, hc2, hs1, hs2, target.tolist(), 0.5, *weights), rel=1e-10)


def test_background_salient_rows_only_feel_the_information_less_term() -> None:
    """s' replaces background salient heads by the null vector, so their gradient is reg_beta
    times that of align(0, h_s) = ||h_s||² / (2 tau) averaged over the background rows."""
    hc1, hc2, hs1, hs2 = _heads(seed=1)
    target = torch.tensor([1, 0, 1, 0, 0, 1, 1])
    hs1 = hs1.clone().requires_grad_(True)
    sepclr_loss(hc1, hc2, hs1, hs2, target, 0.5, 2.0, 7.0, 3.0, 5.0)["total"].backward()
    bg = target == 0
    expected = 3.0 * 0.5 * hs1.detach()[bg] / 0.5 / int(bg.sum())  # d/dx of ½·mean ||x||²/(2 tau)
    assert torch.allclose(hs1.grad[bg], expected, atol=1e-12)


def test_jem_with_null_salient_space_is_the_common_log_kernel_mean() -> None:
    """With only background images s' is constant, so k-JEM reduces to mean_i log mean_j k(c_i, c_j)."""
    hc1, hc2, hs1, hs2 = _heads(seed=2)
    target = torch.zeros(7, dtype=torch.long)
    terms = sepclr_loss(hc1, hc2, hs1, hs2, target)
    c = [torch.nn.functional.normalize(h, dim=1) for h in (hc1, hc2)]
    k = [torch.exp(-torch.cdist(x, x).pow(2)).mean(1).log().mean() for x in c]
    assert float(terms["jem"]) == pytest.approx(float((k[0] + k[1]) / 2), abs=1e-12)
    assert float(terms["salient"]) == pytest.approx(0.0, abs=1e-12)  # null space: align over nobody, log mean exp 0


# ---------------------------------------------------------------- dataset


@pytest.fixture(scope="module")
def salient_data():  # type: ignore[no-untyped-def]
    return components.get("dataset", "digits-salient")({}, None)


def test_digits_salient_pair_is_built_as_documented() -> None:
    p = DigitsSalientParams()
    images, group, digits, pattern = render_digits_salient(p)
    hard, hard_digits = render_digits_hard(p)
    assert np.array_equal(digits, hard_digits)
    bg = group == 0
    assert np.array_equal(images[bg], hard[bg])  # background = plain hard digits
    assert np.all(pattern[bg] == -1) and set(pattern[~bg].tolist()) == {0, 1, 2, 3}
    for d in range(10):  # half of each digit class is target
        assert abs(int((group[digits == d] == 1).sum()) - (digits == d).sum() / 2) <= 0.5
    counts = np.bincount(pattern[~bg])
    assert counts.max() - counts.min() <= 1  # balanced orientations
    i = int(np.flatnonzero(~bg)[0])  # a target image = hard digit + grating, clipped and rounded
    diff = images[i, 0].astype(float) / 255 - hard[i, 0].astype(float) / 255
    inside = (hard[i, 0] > 70) & (hard[i, 0] < 180)
    g = [grating(p.canvas, 45.0 * pattern[i], p.pattern_period, phase) for phase in np.linspace(0, 2 * np.pi, 721)]
    best = min(np.abs(diff[inside] - p.pattern_amplitude * x[inside]).max() for x in g)
    assert best < 4 / 255
    again = render_digits_salient(p)
    assert all(np.array_equal(a, b) for a, b in zip(again, (images, group, digits, pattern)))


def test_digits_salient_splits_carry_all_three_labels(salient_data) -> None:  # type: ignore[no-untyped-def]
    tr, te = salient_data.train, salient_data.test
    assert len(tr) + len(te) == 1797 and salient_data.num_classes == 2 and salient_data.image_size == (32, 32)
    for s in (tr, te):
        assert np.array_equal(s.labels == 0, s.salient_labels == -1)
        assert set(s.common_labels.tolist()) == set(range(10))
    assert abs(len(te) / 1797 - 0.3) < 0.02
    other = components.get("dataset", "digits-salient")({"pattern_seed": 1}, None)
    assert other.train.fingerprint != tr.fingerprint


# ---------------------------------------------------------------- protocol


def test_balanced_accuracy_against_sklearn() -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    assert balanced_accuracy(p, y) == pytest.approx(balanced_accuracy_score(y, p), abs=1e-12)


def test_probe_matches_sklearn_logistic_regression() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 5))
    y = rng.integers(0, 3, 120)
    x = centers[y] + rng.normal(scale=1.5, size=(120, 5))
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=5000).fit(x[:80], y[:80])
    expected = balanced_accuracy_score(y[80:], ref.predict(x[80:]))
    got = probe_balanced_accuracy(x[:80], y[:80], x[80:], y[80:], SalientSeparationParams())
    assert got == pytest.approx(expected, abs=1e-12)


class _Split:
    def __init__(self, common: np.ndarray, salient: np.ndarray) -> None:
        self.common_labels, self.salient_labels = common, salient


def test_separation_of_a_perfectly_split_and_of_an_unsplit_encoder() -> None:
    rng = np.random.default_rng(2)
    n = 400
    common = rng.integers(0, 5, n)
    salient = np.where(np.arange(n) % 5 == 0, -1, rng.integers(0, 4, n))
    feats = np.concatenate([np.eye(5)[common] * 3, np.eye(4)[np.maximum(salient, 0)] * 3], 1)
    feats = feats + rng.normal(scale=0.3, size=feats.shape)
    tr, te = _Split(common[:300], salient[:300]), _Split(common[300:], salient[300:])
    dims = {"common": [0, 5], "salient": [5, 9]}
    m, extras = separation_metrics(feats[:300], feats[300:], tr, te, dims, SalientSeparationParams())
    assert m["common_space_common_acc"] == 100.0 and m["salient_space_salient_acc"] == 100.0
    assert m["salient_space_common_acc"] < 40 and m["common_space_salient_acc"] < 45
    assert m["separation"] > 55 and extras["chance_common"] == 20.0 and extras["chance_salient"] == 25.0
    flat, _ = separation_metrics(feats[:300], feats[300:], tr, te, None, SalientSeparationParams())
    assert flat["separation"] == 0.0 and flat["common_space_common_acc"] == flat["salient_space_common_acc"]


def test_protocol_refuses_a_dataset_without_salient_labels() -> None:
    from cl_bench.protocols.base import RunContext

    proto = components.get("protocol", "salient_separation")
    digits = components.get("dataset", "digits")({}, None)
    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: np.zeros((len(s), 2), np.float32))
    with pytest.raises(ClBenchError, match="digits-salient"):
        proto.run(None, digits, SalientSeparationParams(), ctx)


# ---------------------------------------------------------------- objective through the trainer


def _pair(width: int = 4):
    return components.get("arch", "sepclr-pair")(
        {"base": {"name": "small-resnet", "params": {"width": width}}, "common_dim": 6, "salient_dim": 6},
        in_channels=1, image_size=(32, 32),
    )


def test_sepclr_trains_on_the_pair_and_exposes_its_spaces(salient_data) -> None:  # type: ignore[no-untyped-def]
    from cl_bench.data.image.digits_salient import SalientSplit

    tr = salient_data.train
    sub = SalientSplit(tr.images[:96], tr.labels[:96], tr.common_labels[:96], tr.salient_labels[:96])
    enc = _pair()
    recipe = TrainRecipe(objective="sepclr", params={"proj_hidden": 8}, epochs=1, batch_size=32, lr=0.001)
    card = train_encoder(enc, recipe, sub, 2, seed=0, device=torch.device("cpu"))
    assert card.steps == 3 and all(math.isfinite(x) for x in card.loss_curve)
    with torch.no_grad():
        out = enc(torch.rand(3, 1, 32, 32))
    assert out.shape == (3, 12) and enc.separation_dims == {"common": [0, 6], "salient": [6, 12]}


def test_sepclr_refuses_non_binary_labels_and_plain_encoders() -> None:
    digits = components.get("dataset", "digits-hard")({}, None)
    recipe = TrainRecipe(objective="sepclr", params={"proj_hidden": 8}, epochs=1, batch_size=32, lr=0.001)
    with pytest.raises(ClBenchError, match="background"):
        train_encoder(_pair(), recipe, digits.train, 10, seed=0, device=torch.device("cpu"))
    plain = components.get("arch", "small-resnet")({"width": 4}, in_channels=1, image_size=(32, 32))
    with pytest.raises(ClBenchError, match="sepclr-pair"):
        train_encoder(plain, recipe, digits.train, 10, seed=0, device=torch.device("cpu"))
