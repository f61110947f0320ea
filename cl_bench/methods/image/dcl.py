"""``dcl`` / ``dclw``: Decoupled Contrastive Learning (Yeh et al., arXiv 2110.06848).

DCL is InfoNCE with the positive pair removed from the denominator; for anchor view
``z_i^(u)`` (rows L2-normalised, u in {1, 2}, v the other view):

    L_i^(u) = -w_i <z_i^(u), z_i^(v)> / t + log sum_{k != i, l in {1, 2}} exp(<z_i^(u), z_k^(l)> / t)

averaged over all 2N anchors (the reference code sums the two directions, i.e. twice this;
with Adam the factor is immaterial). DCL has w_i = 1. DCLW weights the positive term with
the negative von Mises-Fisher weight of the paper

    w_i = 2 - exp(<z_i^(1), z_i^(2)> / sigma) / mean_j exp(<z_j^(1), z_j^(2)> / sigma),

so pairs that are still far apart (hard positives) weigh more. As in the paper's formula
and its reference implementation, ``w`` is *not* detached: gradients flow through it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field

from cl_bench.components import register
from cl_bench.methods.image.two_view import ContrastiveParams, TwoViewContrastive

WeightFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def vmf_weights(z1: torch.Tensor, z2: torch.Tensor, sigma: float) -> torch.Tensor:
    """DCLW's weights [N] of normalised pairs: ``2 - N * softmax_i(<z1_i, z2_i> / sigma)``."""
    s = (z1 * z2).sum(dim=1) / sigma
    return 2 - z1.shape[0] * torch.softmax(s, dim=0)


def dcl_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, weight_fn: WeightFn | None = None
) -> torch.Tensor:
    """Symmetric DCL loss of two views [N, D] (normalised here), mean over the 2N anchors.

    ``weight_fn(z1n, z2n) -> [N]`` weights the positive term (None: all ones = DCL).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be [N, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z1n, z2n = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    z = torch.cat([z1n, z2n])
    sim = (z @ z.T) / temperature  # [2N, 2N]
    pos = (z1n * z2n).sum(dim=1) / temperature  # [N]
    if weight_fn is not None:
        pos = pos * weight_fn(z1n, z2n)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    drop = eye.repeat(2, 2)  # self and positive of every anchor
    negatives = torch.logsumexp(sim.masked_fill(drop, float("-inf")), dim=1)  # [2N]
    return (negatives - torch.cat([pos, pos])).mean()


class DCLParams(ContrastiveParams):
    temperature: float = Field(default=0.1, gt=0)


class DCLWParams(DCLParams):
    sigma: float = Field(default=0.5, gt=0)


@register("objective", "dcl")
class DCL(TwoViewContrastive):
    """DCL: decoupled InfoNCE between the projections of two augmented views."""

    objective_name = "dcl"
    params_model = DCLParams

    def loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return dcl_loss(z1, z2, self.params.temperature)


@register("objective", "dclw")
class DCLW(TwoViewContrastive):
    """DCLW: DCL with the von Mises-Fisher weighting of the positive term."""

    objective_name = "dclw"
    params_model = DCLWParams

    def loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        sigma = self.params.sigma
        return dcl_loss(z1, z2, self.params.temperature, lambda a, b: vmf_weights(a, b, sigma))
