"""BYOL: the loss against the paper's formula written out per sample, the target network moved by
the training loop through the objective's momentum pairs (EMA formula), no gradient into the
target, unknown params refused, and a short run on tiny data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cl_bench.data.image.types import ArrayImageSplit
from cl_bench.errors import ClBenchError
from cl_bench.methods.image.byol import BYOL, byol_loss
from cl_bench.methods.trainer import train_encoder
from cl_bench.specs import TrainRecipe
from tests.methods.test_trainer import TinyEncoder, random_split

CPU = torch.device("cpu")


def test_loss_is_the_squared_distance_of_normalised_vectors() -> None:
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    # arXiv 2006.07733 eq. 2: || q / ||q|| - z' / ||z'|| ||^2, per sample, averaged here over the batch
    per_sample = [float(((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum()) for i in range(5)]
    assert float(byol_loss(p, z)) == pytest.approx(sum(per_sample) / 5, rel=1e-12)
    assert float(byol_loss(p, 3 * p)) == pytest.approx(0.0, abs=1e-12)


def test_objective_is_symmetric_and_sends_no_gradient_to_the_target() -> None:
    torch.manual_seed(0)
    enc = TinyEncoder(embed_dim=8)
    obj = BYOL(embed_dim=8, num_classes=0, proj_hidden=16, proj_dim=4, pred_hidden=16)
    obj.momentum_pairs(enc)
    with torch.no_grad():  # make the target differ from the online network
        for q in obj.target.parameters():
            q.add_(0.1)
    v1, v2 = torch.rand(6, 1, 8, 8), torch.rand(6, 1, 8, 8)
    loss = obj(enc, [v1, v2], torch.zeros(0))
    with torch.no_grad():  # the same forward, written out: both views through each network in one pass
        p = obj.predictor(obj.projector(enc(torch.cat([v1, v2]))))
        z = obj.target[1](obj.target[0](torch.cat([v1, v2])))
    expected = sum(2 - 2 * float(torch.cosine_similarity(p[i], z[(i + 6) % 12], dim=0)) for i in range(12)) / 6
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert all(q.grad is None for q in obj.target.parameters())
    assert all(q.grad is not None for q in obj.predictor.parameters())


def test_training_moves_the_target_by_the_ema_of_the_online_network() -> None:
    """One step through the image trainer: target = tau * target_0 + (1 - tau) * online_1, tau at step 0 = 0.9."""
    torch.manual_seed(0)
    enc = TinyEncoder(embed_dim=8)
    start = {k: v.clone() for k, v in enc.state_dict().items()}
    seen: list[BYOL] = []
    original = BYOL.momentum_pairs

    def spy(self: BYOL, encoder: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        seen.append(self)
        return original(self, encoder)

    BYOL.momentum_pairs = spy  # type: ignore[method-assign]
    try:
        recipe = TrainRecipe(objective="byol", epochs=1, batch_size=16, lr=0.01,
                             params={"momentum": 0.9, "proj_hidden": 16, "proj_dim": 4, "pred_hidden": 16})
        card = train_encoder(enc, recipe, random_split(n=16), 3, seed=0, device=CPU)
    finally:
        BYOL.momentum_pairs = original  # type: ignore[method-assign]
    assert card.steps == 1 and math.isfinite(card.loss_curve[0])
    target = dict(seen[0].target[0].named_parameters())
    tau = 1 - (1 - 0.9) * (math.cos(0.0) + 1) / 2  # step 0 of 1
    for name, online in enc.named_parameters():
        torch.testing.assert_close(target[name], tau * start[name] + (1 - tau) * online.detach())
    assert not torch.equal(target["fc.weight"], start["fc.weight"])


def test_unknown_params_are_refused_in_one_line() -> None:
    with pytest.raises(ClBenchError, match="momentun") as e:
        BYOL(embed_dim=8, num_classes=0, momentun=0.9)
    assert "\n" not in str(e.value)


def test_learns_on_tiny_data() -> None:
    torch.manual_seed(0)
    split = ArrayImageSplit(np.random.default_rng(0).integers(0, 256, (64, 1, 8, 8), dtype=np.uint8), np.zeros(64))
    recipe = TrainRecipe(objective="byol", epochs=6, batch_size=32, lr=0.01,
                         params={"proj_hidden": 32, "proj_dim": 8, "pred_hidden": 32})
    card = train_encoder(TinyEncoder(), recipe, split, 1, seed=0, device=CPU)
    assert card.steps == 12 and all(math.isfinite(v) for v in card.loss_curve)
    assert card.loss_curve[-1] < card.loss_curve[0]
