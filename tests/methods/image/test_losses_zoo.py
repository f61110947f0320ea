"""CACR, MV-InfoNCE and MV-DHEL against explicit loop formulas, and each loss's known property."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cl_bench import components
from cl_bench.data.image.types import ArrayImageSplit
from cl_bench.errors import ClBenchError
from cl_bench.methods.image.cacr import cacr_euclidean_loss, cacr_rbf_loss
from cl_bench.methods.image.multiview import mv_dhel_loss, mv_infonce_loss
from cl_bench.methods.image.simclr import nt_xent
from cl_bench.methods.trainer import train_encoder
from cl_bench.specs import TrainRecipe


def _views(v: int, n: int = 5, d: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(v)]


def _unit(x: torch.Tensor) -> list[float]:
    norm = math.sqrt(sum(float(a) ** 2 for a in x))
    return [float(a) / norm for a in x]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _sqd(a: list[float], b: list[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b))


def _lists(zs: list[torch.Tensor]) -> list[list[list[float]]]:
    """zs[l][i] as normalised python lists."""
    return [[_unit(z[i]) for i in range(len(z))] for z in zs]


# ---------------------------------------------------------------- explicit references


def ref_mv_infonce(zs: list[torch.Tensor], t: float) -> float:
    u = _lists(zs)
    v, n = len(u), len(u[0])
    total = 0.0
    for i in range(n):
        num = sum(math.exp(_dot(u[l][i], u[m][i]) / t) for l in range(v) for m in range(v) if m != l)
        den = sum(
            math.exp(_dot(u[l][i], u[m][j]) / t)
            for l in range(v) for m in range(v) for j in range(n) if (j, m) != (i, l)
        )
        total += -math.log(num / den)
    return total / n


def ref_mv_dhel(zs: list[torch.Tensor], t: float) -> float:
    u = _lists(zs)
    v, n = len(u), len(u[0])
    total = 0.0
    for i in range(n):
        num = sum(math.exp(_dot(u[l][i], u[m][i]) / t) for l in range(v) for m in range(l + 1, v))
        energy = 1.0
        for l in range(v):
            energy *= sum(math.exp(_dot(u[l][i], u[l][j]) / t) for j in range(n) if j != i)
        total += -math.log(num / energy)
    return total / n


def _softmax(xs: list[float]) -> list[float]:
    top = max(xs)
    e = [math.exp(x - top) for x in xs]
    return [x / sum(e) for x in e]


def ref_cacr_euclidean(zs: list[torch.Tensor], alpha: float, beta: float, tp: float, tn: float) -> float:
    u = _lists(zs)
    v, n = len(u), len(u[0])
    ca = 0.0
    for a in range(v):
        per_anchor = 0.0
        for i in range(n):
            costs = [_sqd(u[a][i], u[j][i]) for j in range(v) if j != a]
            w = _softmax([tp * c for c in costs])
            per_anchor += sum(wk * alpha * c for wk, c in zip(w, costs))
        ca += per_anchor / n
    ca /= v
    cr, pairs = 0.0, 0
    for a in range(v):
        for b in range(a + 1, v):
            per_pair = 0.0
            for i in range(n):
                d = [_sqd(u[a][i], u[b][k]) for k in range(n) if k != i]
                w = _softmax([-tn * x for x in d])
                per_pair += sum(wk * (-beta) * x for wk, x in zip(w, d))
            cr += per_pair / n
            pairs += 1
    return ca + cr / pairs


def ref_cacr_rbf(zs: list[torch.Tensor], t: float, tp: float) -> float:
    u = _lists(zs)
    v, n = len(u), len(u[0])
    total = 0.0
    for a in range(v):
        queries = [j for j in range(v) if j != a]
        acc = 0.0
        for i in range(n):
            w = _softmax([tp * _sqd(u[j][i], u[a][i]) for j in queries])
            for wk, j in zip(w, queries):
                logits = [_dot(u[j][i], u[a][k]) / t for k in range(n)]
                ce = -logits[i] + math.log(sum(math.exp(x) for x in logits))
                acc += wk * ce
        total += acc / n
    return 2 * t * total / v


# ---------------------------------------------------------------- losses == explicit formulas


@pytest.mark.parametrize("v", [2, 3, 5])
@pytest.mark.parametrize("t", [0.2, 0.5])
def test_mv_infonce_matches_loops(v: int, t: float) -> None:
    zs = _views(v, seed=v)
    assert float(mv_infonce_loss(zs, t)) == pytest.approx(ref_mv_infonce(zs, t), abs=1e-9)
    assert float(mv_infonce_loss([z.float() for z in zs], t)) == pytest.approx(ref_mv_infonce(zs, t), abs=1e-4)


@pytest.mark.parametrize("v", [2, 3, 5])
@pytest.mark.parametrize("t", [0.2, 0.5])
def test_mv_dhel_matches_loops(v: int, t: float) -> None:
    zs = _views(v, seed=10 + v)
    assert float(mv_dhel_loss(zs, t)) == pytest.approx(ref_mv_dhel(zs, t), abs=1e-9)


@pytest.mark.parametrize("v", [2, 3, 5])
@pytest.mark.parametrize(("alpha", "beta", "tp", "tn"), [(1.0, 1.0, 1.0, 1.0), (0.5, 2.0, 3.0, 0.5)])
def test_cacr_euclidean_matches_loops(v: int, alpha: float, beta: float, tp: float, tn: float) -> None:
    zs = _views(v, seed=20 + v)
    got = float(cacr_euclidean_loss(zs, alpha, beta, tp, tn))
    assert got == pytest.approx(ref_cacr_euclidean(zs, alpha, beta, tp, tn), abs=1e-9)


@pytest.mark.parametrize("v", [2, 3, 5])
def test_cacr_rbf_matches_loops(v: int) -> None:
    zs = _views(v, seed=30 + v)
    assert float(cacr_rbf_loss(zs, 0.2, 5.0)) == pytest.approx(ref_cacr_rbf(zs, 0.2, 5.0), abs=1e-9)


# ---------------------------------------------------------------- known properties


def _reflect(z: torch.Tensor, seed: int) -> torch.Tensor:
    """Householder reflection of the rows: a symmetric orthogonal map."""
    h = torch.randn(z.shape[1], generator=torch.Generator().manual_seed(seed), dtype=z.dtype)
    h = h / h.norm()
    return z - 2 * (z @ h)[:, None] * h[None, :]


def test_mv_infonce_two_views_is_infonce_with_averaged_denominators() -> None:
    """V = 2: -s_pos + log((D_1 + D_2) / 2); equals NT-Xent when D_1 = D_2 (a reflected second
    view makes them equal), and is >= NT-Xent otherwise (log of a mean >= mean of logs)."""
    t = 0.5
    z1, z2 = _views(2, n=6, d=5, seed=3)
    u1, u2 = torch.nn.functional.normalize(z1, dim=1), torch.nn.functional.normalize(z2, dim=1)
    u = torch.cat([u1, u2])
    sim = torch.exp(u @ u.T / t) * (1 - torch.eye(12, dtype=u.dtype))
    den = sim.sum(1)
    pos = (u1 * u2).sum(1) / t
    expected = (-pos + torch.log((den[:6] + den[6:]) / 2)).mean()
    assert float(mv_infonce_loss([z1, z2], t)) == pytest.approx(float(expected), abs=1e-12)
    assert float(mv_infonce_loss([z1, z2], t)) > float(nt_xent(z1, z2, t)) + 1e-6

    z2r = _reflect(z1, seed=4)
    assert float(mv_infonce_loss([z1, z2r], t)) == pytest.approx(float(nt_xent(z1, z2r, t)), abs=1e-12)


def test_mv_dhel_two_views_is_dhel() -> None:
    """V = 2: -s(u_i1, u_i2) + log U_i1 + log U_i2 (positive and cross-view pairs not in the energy)."""
    t = 0.3
    z1, z2 = _views(2, n=6, d=5, seed=5)
    u1, u2 = torch.nn.functional.normalize(z1, dim=1), torch.nn.functional.normalize(z2, dim=1)
    off = 1 - torch.eye(6, dtype=u1.dtype)
    energy = torch.log((torch.exp(u1 @ u1.T / t) * off).sum(1)) + torch.log((torch.exp(u2 @ u2.T / t) * off).sum(1))
    expected = (-(u1 * u2).sum(1) / t + energy).mean()
    assert float(mv_dhel_loss([z1, z2], t)) == pytest.approx(float(expected), abs=1e-12)


def test_mv_dhel_uniformity_is_decoupled_from_cross_view_alignment() -> None:
    """Rotating one view changes no within-view similarity, so only the alignment term moves:
    the loss changes by exactly -log sum exp(new positives) + log sum exp(old positives)."""
    t = 0.5
    zs = _views(3, n=7, d=4, seed=6)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    rotated = [zs[0], zs[1] @ q, zs[2]]

    def alignment(views: list[torch.Tensor]) -> torch.Tensor:
        u = [torch.nn.functional.normalize(z, dim=1) for z in views]
        pairs = [(u[a] * u[b]).sum(1) / t for a in range(3) for b in range(a + 1, 3)]
        return torch.logsumexp(torch.stack(pairs), dim=0).mean()

    delta = float(mv_dhel_loss(rotated, t) - mv_dhel_loss(zs, t))
    assert abs(delta) > 1e-3  # the rotation did change the loss ...
    assert delta == pytest.approx(float(alignment(zs) - alignment(rotated)), abs=1e-12)  # ... via alignment only


def test_mv_losses_are_view_order_invariant() -> None:
    zs = _views(4, seed=8)
    perm = [zs[2], zs[0], zs[3], zs[1]]
    for fn in (mv_infonce_loss, mv_dhel_loss):
        assert float(fn(perm, 0.4)) == pytest.approx(float(fn(zs, 0.4)), abs=1e-12)


def test_cacr_uniform_weights_give_mean_distances() -> None:
    """t+ = t- = 0: CA = mean positive squared distance, CR = -mean negative squared distance."""
    zs = _views(3, n=5, seed=9)
    u = [torch.nn.functional.normalize(z, dim=1) for z in zs]
    pos = torch.stack([(u[a] - u[b]).pow(2).sum(1) for a in range(3) for b in range(3) if a != b]).mean()
    off = ~torch.eye(5, dtype=torch.bool)
    neg = torch.stack([torch.cdist(u[a], u[b]).pow(2)[off] for a in range(3) for b in range(a + 1, 3)]).mean()
    got = cacr_euclidean_loss(zs, 1.0, 1.0, 0.0, 0.0)
    assert float(got) == pytest.approx(float(pos - neg), abs=1e-12)


def test_cacr_weights_favour_far_positives_and_close_negatives() -> None:
    """Raising t+ raises CA (more weight on the larger positive costs); raising t- puts more weight
    on the closer negatives, so the weighted distance falls and CR (= -weighted distance) rises."""
    zs = _views(4, n=6, seed=10)
    ca = [float(cacr_euclidean_loss(zs, 1.0, 1e-9, tp, 0.0)) for tp in (0.0, 1.0, 5.0)]
    assert ca[0] < ca[1] < ca[2]
    cr = [float(cacr_euclidean_loss(zs, 1e-9, 1.0, 0.0, tn)) for tn in (0.0, 1.0, 5.0)]
    assert cr[0] < cr[1] < cr[2]


def test_cacr_rbf_uniform_weights_is_scaled_infonce() -> None:
    """rbf form, 2 views, t+ = 0: 2·tau · mean of the two cross-view InfoNCE directions."""
    t = 0.2
    z1, z2 = _views(2, n=6, d=5, seed=11)
    u1, u2 = torch.nn.functional.normalize(z1, dim=1), torch.nn.functional.normalize(z2, dim=1)
    target = torch.arange(6)
    ce = nn.functional.cross_entropy
    infonce = 0.5 * (ce(u1 @ u2.T / t, target) + ce(u2 @ u1.T / t, target))
    assert float(cacr_rbf_loss([z1, z2], t, 0.0)) == pytest.approx(float(2 * t * infonce), abs=1e-12)


def test_cacr_gradient_equals_scaled_decoupled_infonce() -> None:
    """Euclidean form, 2 views, detached weights, alpha = beta = 1: the gradient equals 2·tau times
    the gradient of the one-directional decoupled InfoNCE at tau = 1 / (2·t-)."""
    t_neg = 2.5
    tau = 1 / (2 * t_neg)
    z1, z2 = _views(2, n=6, d=5, seed=12)
    a1, a2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    cacr_euclidean_loss([a1, a2], 1.0, 1.0, 1.0, t_neg, detach_weights=True).backward()
    b1, b2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    u1, u2 = torch.nn.functional.normalize(b1, dim=1), torch.nn.functional.normalize(b2, dim=1)
    sim = u1 @ u2.T / tau
    neg = torch.logsumexp(sim.masked_fill(torch.eye(6, dtype=torch.bool), float("-inf")), dim=1)
    (2 * tau * (neg - sim.diagonal()).mean()).backward()
    assert torch.allclose(a1.grad, b1.grad, atol=1e-12)
    assert torch.allclose(a2.grad, b2.grad, atol=1e-12)


def test_cacr_undetached_weights_change_the_gradient_not_the_value() -> None:
    zs = _views(3, n=5, seed=13)
    grads = []
    for detach in (False, True):
        leaves = [z.clone().requires_grad_(True) for z in zs]
        loss = cacr_euclidean_loss(leaves, 1.0, 1.0, 2.0, 2.0, detach_weights=detach)
        loss.backward()
        grads.append((float(loss.detach()), leaves[0].grad.clone()))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-12)
    assert not torch.allclose(grads[0][1], grads[1][1])


# ---------------------------------------------------------------- objectives through the trainer


class _CountingEncoder(nn.Module):
    """Flattens and projects; records the batch sizes it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 6)
        self.embed_dim = 6
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.fc(x.flatten(1))


@pytest.mark.parametrize(
    ("objective", "params", "n_views"),
    [
        ("mv-infonce", {"views": 2}, 2),
        ("mv-infonce", {"views": 3}, 3),
        ("mv-dhel", {"views": 5}, 5),
        ("cacr", {"positives": 2}, 3),
        ("cacr", {"positives": 1, "cost": "rbf"}, 2),
    ],
)
def test_trainer_feeds_the_objectives_view_count(objective: str, params: dict, n_views: int) -> None:
    images = torch.rand(24, 1, 4, 4, generator=torch.Generator().manual_seed(0)).numpy()
    split = ArrayImageSplit(images, torch.zeros(24, dtype=torch.long).numpy())
    recipe = TrainRecipe(
        objective=objective, params={**params, "proj_hidden": 8, "proj_dim": 4}, epochs=2, batch_size=8, lr=0.01,
        augment={"erase_prob": 0.0},
    )
    enc = _CountingEncoder()
    card = train_encoder(enc, recipe, split, 0, seed=0, device=torch.device("cpu"))
    training_calls = [c for c in enc.calls if c != 1]  # embed_dim probe may call with 1 image
    assert training_calls == [8 * n_views] * card.steps and card.steps == 6
    assert all(math.isfinite(x) for x in card.loss_curve)


@pytest.mark.parametrize(
    ("objective", "params", "bad"),
    [("mv-dhel", {"views": 1}, "views"), ("cacr", {"positives": 0}, "positives"), ("cacr", {"cost": "cosine"}, "cost")],
)
def test_bad_params_are_one_line_errors(objective: str, params: dict, bad: str) -> None:
    cls = components.get("objective", objective)
    with pytest.raises(ClBenchError, match=bad):
        cls(embed_dim=4, num_classes=0, **params)
