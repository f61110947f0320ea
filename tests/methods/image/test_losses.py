"""NT-Xent, DCL, DCLW and the supervised objective against explicit loop formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.methods.image.dcl import dcl_loss, vmf_weights
from cl_bench.methods.image.simclr import nt_xent


def _pairs(n: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b) / (float(a.norm()) * float(b.norm()))


def ref_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    n = len(z1)
    views = [*z1, *z2]
    total = 0.0
    for a in range(2 * n):
        p = a + n if a < n else a - n
        denom = sum(math.exp(_cos(views[a], views[k]) / t) for k in range(2 * n) if k != a)
        total += -math.log(math.exp(_cos(views[a], views[p]) / t) / denom)
    return total / (2 * n)


def ref_vmf_weights(z1: torch.Tensor, z2: torch.Tensor, sigma: float) -> list[float]:
    e = [math.exp(_cos(z1[i], z2[i]) / sigma) for i in range(len(z1))]
    mean = sum(e) / len(e)
    return [2 - x / mean for x in e]


def ref_dcl(z1: torch.Tensor, z2: torch.Tensor, t: float, weights: list[float] | None = None) -> float:
    n = len(z1)
    w = weights or [1.0] * n
    total = 0.0
    for u, v in ((z1, z2), (z2, z1)):
        for i in range(n):
            neg = sum(
                math.exp(_cos(u[i], other[k]) / t) for other in (z1, z2) for k in range(n) if k != i
            )
            total += -w[i] * _cos(u[i], v[i]) / t + math.log(neg)
    return total / (2 * n)


def _orthonormal_pairs(n: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair i lives in its own plane: z1_i = e_2i, z2_i at angle theta; cross-pair sims are 0."""
    z1 = torch.zeros(n, 2 * n, dtype=torch.float64)
    z2 = torch.zeros(n, 2 * n, dtype=torch.float64)
    for i in range(n):
        z1[i, 2 * i] = 1.0
        z2[i, 2 * i], z2[i, 2 * i + 1] = math.cos(theta), math.sin(theta)
    return z1, z2


@pytest.mark.parametrize("t", [0.1, 0.5, 2.0])
def test_nt_xent_matches_loops(t: float) -> None:
    z1, z2 = _pairs()
    assert float(nt_xent(z1, z2, t)) == pytest.approx(ref_nt_xent(z1, z2, t), abs=1e-5)
    got32 = float(nt_xent(z1.float(), z2.float(), t))
    assert got32 == pytest.approx(ref_nt_xent(z1, z2, t), abs=1e-5)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_dcl_matches_loops(t: float) -> None:
    z1, z2 = _pairs(n=7, d=4, seed=1)
    assert float(dcl_loss(z1, z2, t)) == pytest.approx(ref_dcl(z1, z2, t), abs=1e-5)
    assert float(dcl_loss(z1.float(), z2.float(), t)) == pytest.approx(ref_dcl(z1, z2, t), abs=1e-5)


def test_dclw_matches_loops() -> None:
    z1, z2 = _pairs(n=5, d=6, seed=2)
    w = ref_vmf_weights(z1, z2, 0.5)
    got_w = vmf_weights(F.normalize(z1, dim=1), F.normalize(z2, dim=1), 0.5)
    assert got_w.tolist() == pytest.approx(w, abs=1e-9)
    assert float(got_w.mean()) == pytest.approx(1.0, abs=1e-12)  # 2 - mean(N * softmax) = 1
    got = dcl_loss(z1, z2, 0.1, lambda a, b: vmf_weights(a, b, 0.5))
    assert float(got) == pytest.approx(ref_dcl(z1, z2, 0.1, w), abs=1e-5)


def test_dcl_denominator_has_no_positive() -> None:
    """Moving only the positive similarity changes DCL exactly by the -pos/t term."""
    n, t = 4, 0.2
    a1, a2 = _orthonormal_pairs(n, 0.3)
    b1, b2 = _orthonormal_pairs(n, 1.2)
    d_dcl = float(dcl_loss(b1, b2, t) - dcl_loss(a1, a2, t))
    assert d_dcl == pytest.approx(-(math.cos(1.2) - math.cos(0.3)) / t, abs=1e-10)
    # hand-worked value: every negative similarity is 0, so the log term is log(2N - 2)
    assert float(dcl_loss(a1, a2, t)) == pytest.approx(-math.cos(0.3) / t + math.log(2 * n - 2), abs=1e-10)
    # NT-Xent keeps the positive in its denominator, so its change differs
    d_nt = float(nt_xent(b1, b2, t) - nt_xent(a1, a2, t))
    assert abs(d_nt - d_dcl) > 0.1


def test_identical_views_hand_worked() -> None:
    n, t = 5, 0.5
    z, _ = _orthonormal_pairs(n, 0.0)
    assert float(nt_xent(z, z, t)) == pytest.approx(math.log(1 + (2 * n - 2) * math.exp(-1 / t)), abs=1e-10)
    assert float(dcl_loss(z, z, t)) == pytest.approx(-1 / t + math.log(2 * n - 2), abs=1e-10)
    # equal positive similarities -> all DCLW weights are 1 -> DCLW == DCL
    w = vmf_weights(z, z, 0.5)
    assert torch.allclose(w, torch.ones(n, dtype=torch.float64))
    dclw = dcl_loss(z, z, t, lambda a, b: vmf_weights(a, b, 0.5))
    assert float(dclw) == pytest.approx(float(dcl_loss(z, z, t)), abs=1e-12)


def test_temperature_limits() -> None:
    z1, _ = _pairs(n=6, d=8, seed=3)
    z2 = z1 + 1e-3 * _pairs(n=6, d=8, seed=4)[0]  # positives are each anchor's unique max
    assert float(nt_xent(z1, z2, 1e-3)) < 1e-6
    n = len(z1)
    assert float(nt_xent(z1, z2, 1e6)) == pytest.approx(math.log(2 * n - 1), abs=1e-5)
    assert float(dcl_loss(z1, z2, 1e6)) == pytest.approx(math.log(2 * n - 2), abs=1e-5)


def test_dclw_with_unit_weights_is_dcl() -> None:
    z1, z2 = _pairs(seed=5)
    ones = dcl_loss(z1, z2, 0.1, lambda a, b: torch.ones(len(a), dtype=a.dtype))
    assert float(ones) == pytest.approx(float(dcl_loss(z1, z2, 0.1)), abs=1e-12)
    weighted = dcl_loss(z1, z2, 0.1, lambda a, b: vmf_weights(a, b, 0.5))
    assert abs(float(weighted) - float(ones)) > 1e-4  # random pairs: the weights matter


def test_gradients_flow() -> None:
    for loss_fn in (
        lambda a, b: nt_xent(a, b, 0.5),
        lambda a, b: dcl_loss(a, b, 0.1),
        lambda a, b: dcl_loss(a, b, 0.1, lambda x, y: vmf_weights(x, y, 0.5)),
    ):
        z1, z2 = (z.float().requires_grad_() for z in _pairs(seed=6))
        loss_fn(z1, z2).backward()
        for z in (z1, z2):
            assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # DCLW's weights are not detached: the gradient differs from constant weights
    z1, z2 = (z.requires_grad_() for z in _pairs(seed=7))
    dcl_loss(z1, z2, 0.1, lambda x, y: vmf_weights(x, y, 0.5)).backward()
    live = z1.grad.clone()
    z1.grad = None
    dcl_loss(z1, z2, 0.1, lambda x, y: vmf_weights(x, y, 0.5).detach()).backward()
    assert not torch.allclose(live, z1.grad)


class _Flat(nn.Module):
    embed_dim = 12

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


@pytest.mark.parametrize("name, defaults", [
    ("simclr", {"temperature": 0.5}),
    ("dcl", {"temperature": 0.1}),
    ("dclw", {"temperature": 0.1, "sigma": 0.5}),
])
def test_contrastive_objectives(name: str, defaults: dict[str, float]) -> None:
    cls = components.get("objective", name)
    obj = cls(embed_dim=12, num_classes=0)
    assert obj.n_views == 2 and not obj.needs_labels
    for k, v in defaults.items():
        assert getattr(obj.params, k) == v
    torch.manual_seed(0)
    enc = _Flat()
    v1, v2 = torch.rand(8, 1, 4, 4), torch.rand(8, 1, 4, 4)
    loss = obj(enc, [v1, v2], torch.zeros(8, dtype=torch.long))
    assert loss.ndim == 0 and torch.isfinite(loss)
    z = obj.head(enc(torch.cat([v1, v2])))  # same train-mode BN pass as the objective's
    ref = {"simclr": lambda: nt_xent(z[:8], z[8:], 0.5), "dcl": lambda: dcl_loss(z[:8], z[8:], 0.1),
           "dclw": lambda: dcl_loss(z[:8], z[8:], 0.1, lambda a, b: vmf_weights(a, b, 0.5))}[name]()
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), abs=1e-5)
    loss.backward()
    assert enc.lin.weight.grad is not None and obj.head[0].weight.grad is not None


@pytest.mark.parametrize("name", ["simclr", "dcl", "dclw", "supervised"])
def test_objective_rejects_bad_params(name: str) -> None:
    cls = components.get("objective", name)
    with pytest.raises(ClBenchError, match=rf"{name}.*temprature"):
        cls(embed_dim=4, num_classes=3, temprature=0.5)
    if name != "supervised":
        with pytest.raises(ClBenchError, match="temperature"):
            cls(embed_dim=4, num_classes=3, temperature=-1.0)


def test_supervised_is_cross_entropy_of_a_linear_classifier() -> None:
    obj = components.get("objective", "supervised")(embed_dim=12, num_classes=3)
    assert obj.n_views == 1 and obj.needs_labels
    torch.manual_seed(1)
    enc = _Flat()
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 2, 1, 1, 0])
    loss = float(obj(enc, [x], y).detach())
    logits = obj.classifier(enc(x)).detach().tolist()
    ref = sum(math.log(sum(math.exp(v) for v in row)) - row[c] for row, c in zip(logits, y.tolist())) / 5
    assert loss == pytest.approx(ref, abs=1e-5)
    with pytest.raises(ClBenchError, match="classes"):
        components.get("objective", "supervised")(embed_dim=12, num_classes=0)
