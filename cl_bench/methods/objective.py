"""Base class of a training objective."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import nn

from cl_bench.models.interfaces.image_encoder import ImageEncoder


class Objective(nn.Module):
    """A training loss, with whatever heads it owns (projection MLP, classifier...).

    The trainer builds it as ``cls(embed_dim=..., num_classes=..., **recipe.params)``,
    feeds it ``n_views`` augmented views of each batch, and optimises the encoder's and
    the objective's parameters together. Heads are discarded after training: only the
    encoder is saved. An objective with a momentum branch (BYOL, PixPro) declares it in
    :meth:`momentum_pairs`; the training loop applies the EMA.
    """

    n_views: int = 2
    needs_labels: bool = False
    momentum_base: float = 0.99  # EMA coefficient of the momentum pairs at step 0
    momentum_schedule: Literal["cosine", "constant"] = "cosine"  # cosine: rises to 1 at the end
    momentum_copy_buffers: bool = True  # the momentum copies also take the online BN statistics
    # Bump when a change to the objective's code changes what a recipe trains: from 2 on it is part
    # of the method's spec hash and of the checkpoint cache key (objective_version), so results and
    # checkpoints made by the older code are neither reused nor mistaken for the new ones.
    version: ClassVar[int] = 1

    def __init__(self, embed_dim: int, num_classes: int, **params: Any) -> None:
        super().__init__()
        if params:
            raise TypeError(f"{type(self).__name__} got unknown params: {sorted(params)}")
        self.embed_dim = embed_dim
        self.num_classes = num_classes

    def momentum_pairs(self, encoder: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum copy) module pairs that the trainer moves by EMA after every optimizer
        step (:class:`~cl_bench.methods.momentum.MomentumPairs`). Called once, before training, with
        the encoder on its device; an objective with a momentum branch makes its copies here."""
        return []

    def forward(  # pragma: no cover - abstract
        self, encoder: ImageEncoder, views: list[torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError


def objective_version(name: str) -> int:
    """The ``version`` of the registered objective ``name`` (1 for one that declares none)."""
    from cl_bench import components

    return int(getattr(components.get("objective", name), "version", 1))
