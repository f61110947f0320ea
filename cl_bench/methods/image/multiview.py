"""``mv-infonce`` / ``mv-dhel``: multi-view contrastive losses (Koromilas et al., arXiv 2507.06979).

Each of the N instances of a batch has V >= 2 augmented views with L2-normalised projections
``u_{i,l}`` (l = 1..V); ``s(a, b) = <a, b> / t``. Both losses have ONE term per instance that
holds every view interaction at once (instead of a sum of pairwise losses), as in the
authors' reference code (pakoromilas/Multi-View-CL, ``models/losses.py``):

MV-InfoNCE::

    L_i = -log  sum_{l != l'} exp s(u_il, u_il')
              / sum_l sum_{(j, l') != (i, l)} exp s(u_il, u_jl')

(the denominator holds every other embedding of the batch, positives included, as InfoNCE).
With V = 2 this is ``-s(u_i1, u_i2) + log((D_i1 + D_i2) / 2)`` where ``D_il`` is NT-Xent's
denominator of anchor (i, l): NT-Xent averages the two logs, MV-InfoNCE takes the log of the
average, so MV-InfoNCE(2 views) >= NT-Xent, with equality when the two denominators agree.

MV-DHEL (decoupled hyperspherical energy loss)::

    L_i = -log sum_{l < l'} exp s(u_il, u_il')  +  sum_l log sum_{j != i} exp s(u_il, u_jl)

alignment across all views, uniformity within each view only (no positive, no cross-view
negative): with V = 2 it is DHEL, ``-s(u_i1, u_i2) + log U_i1 + log U_i2``.

Both average L_i over the N instances. ``views`` (the recipe's ``train.params.views``) sets
how many augmented views the trainer makes per image.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from cl_bench.components import register
from cl_bench.methods.objective import Objective
from cl_bench.methods.image.two_view import ContrastiveParams, ProjectionHead
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.specs import validate_params


def _check_views(zs: list[torch.Tensor]) -> torch.Tensor:
    """Stack V views [N, D] into one L2-normalised tensor [V, N, D]."""
    if len(zs) < 2:
        raise ValueError(f"a multi-view loss needs at least 2 views, got {len(zs)}")
    shape = zs[0].shape
    if len(shape) != 2 or any(z.shape != shape for z in zs):
        raise ValueError(f"every view must be [N, D] of one shape, got {[tuple(z.shape) for z in zs]}")
    return F.normalize(torch.stack(zs), dim=-1)


def mv_infonce_loss(zs: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """MV-InfoNCE of V views (each [N, D], normalised here); mean over the N instances."""
    u = _check_views(zs)
    v, n, _ = u.shape
    flat = u.reshape(v * n, -1)
    sim = (flat @ flat.T) / temperature  # row/col index = view * n + instance
    sim = sim.masked_fill(torch.eye(v * n, dtype=torch.bool, device=sim.device), float("-inf"))
    grid = sim.view(v, n, v, n)  # [view l, instance i, view l', instance j]
    positives = torch.logsumexp(grid.diagonal(dim1=1, dim2=3), dim=(0, 1))  # [N] over l != l'
    everything = torch.logsumexp(grid.permute(1, 0, 2, 3).reshape(n, -1), dim=1)  # [N]
    return (everything - positives).mean()


def mv_dhel_loss(zs: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """MV-DHEL of V views (each [N, D], normalised here); mean over the N instances."""
    u = _check_views(zs)
    v, n, _ = u.shape
    within = torch.einsum("lid,ljd->lij", u, u) / temperature  # [V, N, N] same-view similarities
    within = within.masked_fill(torch.eye(n, dtype=torch.bool, device=u.device), float("-inf"))
    uniformity = torch.logsumexp(within, dim=2).sum(dim=0)  # [N]: sum over views of log U_il
    cross = torch.einsum("lid,mid->ilm", u, u) / temperature  # [N, V, V] views of one instance
    upper = torch.triu(torch.ones(v, v, dtype=torch.bool, device=u.device), diagonal=1)
    alignment = torch.logsumexp(cross[:, upper], dim=1)  # [N] over pairs l < l'
    return (uniformity - alignment).mean()


class MultiViewParams(ContrastiveParams):
    views: int = Field(default=2, ge=2, le=16)


class MultiViewContrastive(Objective):
    """Encode all V views in one pass (BN statistics over every view), project, apply the loss."""

    params_model: type[MultiViewParams] = MultiViewParams
    objective_name = "multiview"

    def __init__(self, embed_dim: int, num_classes: int, **params: Any) -> None:
        super().__init__(embed_dim, num_classes)
        self.params = validate_params(
            self.params_model, params, where=f"train.params (objective {self.objective_name})"
        )
        self.n_views = self.params.views  # the trainer reads the instance attribute
        self.head = ProjectionHead(embed_dim, self.params.proj_hidden, self.params.proj_dim)

    def loss(self, zs: list[torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self, encoder: ImageEncoder, views: list[torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        if len(views) != self.n_views:
            raise ValueError(f"{self.objective_name} expects {self.n_views} views, got {len(views)}")
        z = self.head(encoder(torch.cat(views)))
        return self.loss(list(z.chunk(self.n_views)))


@register("objective", "mv-infonce")
class MVInfoNCE(MultiViewContrastive):
    """MV-InfoNCE: every view interaction of an instance in one InfoNCE term."""

    objective_name = "mv-infonce"

    def loss(self, zs: list[torch.Tensor]) -> torch.Tensor:
        return mv_infonce_loss(zs, self.params.temperature)


@register("objective", "mv-dhel")
class MVDHEL(MultiViewContrastive):
    """MV-DHEL: multi-view alignment decoupled from per-view uniformity."""

    objective_name = "mv-dhel"

    def loss(self, zs: list[torch.Tensor]) -> torch.Tensor:
        return mv_dhel_loss(zs, self.params.temperature)
