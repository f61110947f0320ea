"""Base class of a training objective."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cl_bench.models.interfaces import ImageEncoder


class Objective(nn.Module):
    """A training loss, with whatever heads it owns (projection MLP, classifier...).

    The trainer builds it as ``cls(embed_dim=..., num_classes=..., **recipe.params)``,
    feeds it ``n_views`` augmented views of each batch, and optimises the encoder's and
    the objective's parameters together. Heads are discarded after training: only the
    encoder is saved.
    """

    n_views: int = 2
    needs_labels: bool = False

    def __init__(self, embed_dim: int, num_classes: int, **params: Any) -> None:
        super().__init__()
        if params:
            raise TypeError(f"{type(self).__name__} got unknown params: {sorted(params)}")
        self.embed_dim = embed_dim
        self.num_classes = num_classes

    def forward(  # pragma: no cover - abstract
        self, encoder: ImageEncoder, views: list[torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError
