"""``byol``: Bootstrap Your Own Latent (Grill et al., arXiv 2006.07733).

An online network (encoder f_θ, projector g_θ, predictor q_θ) predicts the target network's
projection of the other view; the target (f_ξ, g_ξ) is an EMA of the online encoder and
projector, declared as the objective's momentum pairs and moved by the training loop after every
step: ξ <- τ ξ + (1 - τ) θ, τ = 1 - (1 - τ_base) (cos(π k / K) + 1) / 2. For views v, v'::

    L = || q̄_θ(g_θ(f_θ(v))) - ḡ_ξ(f_ξ(v')) ||² = 2 - 2 cos(q_θ(z_θ), z'_ξ)     (x̄ = x / ||x||)

symmetrised (v' through the online network, v through the target) and averaged over the batch;
no gradient reaches the target. Projector and predictor are ``Linear-BN-ReLU-Linear`` MLPs.
Both views go through each network in one pass (BN statistics over both views, as ``simclr``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.components import register
from cl_bench.methods.momentum import momentum_copy
from cl_bench.methods.objective import Objective
from cl_bench.methods.image.two_view import ProjectionHead
from cl_bench.specs import validate_params


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``2 - 2 cos(p, z)`` (= the squared distance of the unit vectors);
    ``z`` (the target side) is detached."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


class BYOLParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    momentum: float = Field(default=0.99, ge=0, le=1)  # τ_base (the paper: 0.996 for 1000 epochs)
    proj_hidden: int = Field(default=512, ge=1)
    proj_dim: int = Field(default=128, ge=1)
    pred_hidden: int = Field(default=512, ge=1)


@register("objective", "byol")
class BYOL(Objective):
    n_views = 2

    def __init__(self, embed_dim: int, num_classes: int, **params: Any) -> None:
        super().__init__(embed_dim, num_classes)
        self.params = validate_params(BYOLParams, params, "train.params (objective byol)")
        p = self.params
        self.projector = ProjectionHead(embed_dim, p.proj_hidden, p.proj_dim)
        self.predictor = ProjectionHead(p.proj_dim, p.pred_hidden, p.proj_dim)
        self.target = nn.ModuleList()

    @property
    def momentum_base(self) -> float:  # type: ignore[override]
        return self.params.momentum

    def momentum_pairs(self, encoder: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        self.target = nn.ModuleList([momentum_copy(encoder), momentum_copy(self.projector)])
        return [(encoder, self.target[0]), (self.projector, self.target[1])]

    def forward(self, encoder: nn.Module, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if len(views) != 2 or len(self.target) != 2:
            raise ValueError("byol takes 2 views, after momentum_pairs() made its target network")
        x = torch.cat(views)
        p1, p2 = self.predictor(self.projector(encoder(x))).chunk(2)
        with torch.no_grad():
            z1, z2 = self.target[1](self.target[0](x)).chunk(2)
        return byol_loss(p1, z2) + byol_loss(p2, z1)
