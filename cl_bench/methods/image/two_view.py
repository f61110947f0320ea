"""What the two-view contrastive objectives share: ``ContrastiveParams``, ``ProjectionHead`` and
``TwoViewContrastive`` (encode both views in one pass, project, apply a loss on the two
projection batches). SimCLR, DCL, MCL, the rotation pretext and the multi-view losses build on it.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.methods.objective import Objective
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.specs import validate_params


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
