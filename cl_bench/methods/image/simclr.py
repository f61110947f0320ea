"""``simclr``: NT-Xent (InfoNCE over 2N views) with a projection MLP (Chen et al., arXiv 2002.05709).

Also home of what the other two-view contrastive objectives share: ``ProjectionHead``,
``ContrastiveParams`` and ``TwoViewContrastive`` (encode both views in one pass, project,
apply a loss on the two projection batches).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.components import register
from cl_bench.methods.objective import Objective
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.specs import validate_params


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of two views [N, D] (rows are L2-normalised here; cosine similarity).

    Each of the 2N views is an anchor whose positive is its pair; the other 2N - 2 views are
    its negatives. Returns the mean over the 2N anchors of
    ``-log exp(s_pos / t) / sum_{k != anchor} exp(s_k / t)``.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be [N, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(n, device=z.device)
    targets = torch.cat([idx + n, idx])
    return F.cross_entropy(logits, targets)


class ContrastiveParams(BaseModel):
    """Params of a two-view contrastive objective with a projection head."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=0.5, gt=0)
    proj_hidden: int = Field(default=512, ge=1)
    proj_dim: int = Field(default=128, ge=1)


class ProjectionHead(nn.Sequential):
    """``Linear(embed, hidden) -> BatchNorm -> ReLU -> Linear(hidden, out)`` (SimCLR's g)."""

    def __init__(self, embed_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(embed_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )


class TwoViewContrastive(Objective):
    """Base of the two-view objectives: ``loss(z1, z2)`` on projections of the two views."""

    n_views = 2
    params_model: type[ContrastiveParams] = ContrastiveParams

    def __init__(self, embed_dim: int, num_classes: int, **params: Any) -> None:
        super().__init__(embed_dim, num_classes)
        name = getattr(type(self), "objective_name", type(self).__name__)
        self.params = validate_params(self.params_model, params, where=f"train.params (objective {name})")
        self.head = ProjectionHead(embed_dim, self.params.proj_hidden, self.params.proj_dim)

    def loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(
        self, encoder: ImageEncoder, views: list[torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        if len(views) != 2:
            raise ValueError(f"{type(self).__name__} takes 2 views, got {len(views)}")
        z = self.head(encoder(torch.cat(views)))  # one pass: BN statistics over both views
        z1, z2 = z.chunk(2)
        return self.loss(z1, z2)


@register("objective", "simclr")
class SimCLR(TwoViewContrastive):
    """SimCLR: NT-Xent between the projections of two augmented views."""

    objective_name = "simclr"

    def loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, self.params.temperature)
