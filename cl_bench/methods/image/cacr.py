"""``cacr``: Contrastive Attraction and Contrastive Repulsion (Zheng et al., arXiv 2105.03746).

Every image gets V = 1 + ``positives`` augmented views (multi-positive sampling); projections
are L2-normalised, ``d(a, b) = ||a - b||²``. Two forms, both from the authors' releases
(JegZheng/CACR-SSL):

``cost: euclidean`` — the paper's objective, as in ``small_scale_experiments/losses``::

    CA = mean_a mean_i sum_{j != a} pi+_{aij} · alpha · d(z_i^a, z_i^j)
         pi+_{ai·} = softmax_j( t+ · d(z_i^a, z_i^j) )       (distant positives attract more)
    CR = mean_{a < b} mean_i sum_{k != i} pi-_{abik} · (-beta) · d(z_i^a, z_k^b)
         pi-_{abi·} = softmax_k( -t- · d(z_i^a, z_k^b) )     (close negatives repel more)
    L  = CA + CR

The conditional weights pi carry gradients there (``detach_weights: false``, as in that
code). With t+ = t- = 0 the weights are uniform: CA is the mean positive distance and CR
minus the mean negative distance. With 2 views and detached weights, the gradient of L equals
``2·tau`` times the gradient of the decoupled InfoNCE (negatives from the other view, positive
not in the denominator) at ``tau = 1 / (2·t-)``.

``cost: rbf`` — the ImageNet release (``imagenet_pretraining/moco/builder.py::cacr_rbfloss``),
without its momentum encoder: every view a in turn is the key set; each other view j of an
image is a query, scored by InfoNCE against all keys of view a; the queries of one image are
weighted by a detached pi+ = softmax_j(t+ · d(z_i^j, z_i^a)) (the release uses t+ = 1/tau)::

    L = 2·tau · mean_a mean_i sum_{j != a} pi+_{aij} · CE( <z_i^j, z^a_·> / tau, target i )

With uniform weights (t+ = 0) and 2 views, L is 2·tau times the symmetric cross-view InfoNCE.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from cl_bench.components import register
from cl_bench.methods.objective import Objective
from cl_bench.methods.image.two_view import ProjectionHead
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.specs import validate_params


def _normalised_views(zs: list[torch.Tensor]) -> torch.Tensor:
    if len(zs) < 2:
        raise ValueError(f"CACR needs at least 2 views (1 positive), got {len(zs)}")
    shape = zs[0].shape
    if len(shape) != 2 or any(z.shape != shape for z in zs):
        raise ValueError(f"every view must be [N, D] of one shape, got {[tuple(z.shape) for z in zs]}")
    return F.normalize(torch.stack(zs), dim=-1)  # [V, N, D]


def _sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared euclidean distances [N, M] between rows of a [N, D] and b [M, D]."""
    return (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)


def contrastive_attraction(
    u: torch.Tensor, alpha: float, t_pos: float, detach_weights: bool
) -> torch.Tensor:
    """CA of normalised views u [V, N, D]: weighted positive cost, mean over anchors."""
    v = u.shape[0]
    d = (u[:, None] - u[None, :]).pow(2).sum(-1)  # [V(anchor), V(positive), N]
    off = ~torch.eye(v, dtype=torch.bool, device=u.device)
    d = d[off].view(v, v - 1, -1)  # positives j != a
    w = torch.softmax(t_pos * d, dim=1)
    if detach_weights:
        w = w.detach()
    return (w * alpha * d).sum(dim=1).mean()


def contrastive_repulsion(
    u: torch.Tensor, beta: float, t_neg: float, detach_weights: bool
) -> torch.Tensor:
    """CR of normalised views u [V, N, D]: for each view pair a < b, anchors of a against
    the other images of b, weighted by closeness; mean over pairs and anchors."""
    v, n, _ = u.shape
    off = ~torch.eye(n, dtype=torch.bool, device=u.device)
    total = u.new_zeros(())
    pairs = 0
    for a in range(v):
        for b in range(a + 1, v):
            d = _sq_dist(u[a], u[b])[off].view(n, n - 1)
            w = torch.softmax(-t_neg * d, dim=1)
            if detach_weights:
                w = w.detach()
            total = total + (w * (-beta) * d).sum(dim=1).mean()
            pairs += 1
    return total / pairs


def cacr_euclidean_loss(
    zs: list[torch.Tensor],
    alpha: float = 1.0,
    beta: float = 1.0,
    t_pos: float = 1.0,
    t_neg: float = 1.0,
    detach_weights: bool = False,
) -> torch.Tensor:
    """CACR (euclidean cost) of V >= 2 views [N, D]: CA + CR."""
    u = _normalised_views(zs)
    return contrastive_attraction(u, alpha, t_pos, detach_weights) + contrastive_repulsion(
        u, beta, t_neg, detach_weights
    )


def cacr_rbf_loss(zs: list[torch.Tensor], temperature: float, t_pos: float) -> torch.Tensor:
    """CACR (rbf form of the ImageNet release) of V >= 2 views [N, D]."""
    u = _normalised_views(zs)
    v, n, _ = u.shape
    targets = torch.arange(n, device=u.device)
    total = u.new_zeros(())
    for a in range(v):
        queries = [j for j in range(v) if j != a]
        with torch.no_grad():
            d = torch.stack([(u[j] - u[a]).pow(2).sum(-1) for j in queries])  # [V-1, N]
            w = torch.softmax(t_pos * d, dim=0)
        ce = torch.stack(
            [F.cross_entropy(u[j] @ u[a].T / temperature, targets, reduction="none") for j in queries]
        )
        total = total + (w * ce).sum(dim=0).mean()
    return 2 * temperature * total / v


class CACRParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    positives: int = Field(default=4, ge=1, le=15)  # views per image = positives + 1
    cost: Literal["euclidean", "rbf"] = "euclidean"
    t_pos: float = Field(default=1.0, ge=0)  # t+ of the positive conditional weights
    t_neg: float = Field(default=1.0, ge=0)  # t- of the negative conditional weights (euclidean)
    alpha: float = Field(default=1.0, gt=0)
    beta: float = Field(default=1.0, gt=0)
    detach_weights: bool = False  # euclidean form only; the rbf form always detaches
    temperature: float = Field(default=0.2, gt=0)  # rbf form only
    proj_hidden: int = Field(default=512, ge=1)
    proj_dim: int = Field(default=128, ge=1)


@register("objective", "cacr")
class CACR(Objective):
    """CACR with a SimCLR projection head; all 1 + ``positives`` views encoded in one pass."""

    def __init__(self, embed_dim: int, num_classes: int, **params: Any) -> None:
        super().__init__(embed_dim, num_classes)
        self.params = validate_params(CACRParams, params, where="train.params (objective cacr)")
        self.n_views = self.params.positives + 1  # the trainer reads the instance attribute
        self.head = ProjectionHead(embed_dim, self.params.proj_hidden, self.params.proj_dim)

    def loss(self, zs: list[torch.Tensor]) -> torch.Tensor:
        p = self.params
        if p.cost == "rbf":
            return cacr_rbf_loss(zs, p.temperature, p.t_pos)
        return cacr_euclidean_loss(zs, p.alpha, p.beta, p.t_pos, p.t_neg, p.detach_weights)

    def forward(
        self, encoder: ImageEncoder, views: list[torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        if len(views) != self.n_views:
            raise ValueError(f"cacr expects {self.n_views} views, got {len(views)}")
        z = self.head(encoder(torch.cat(views)))
        return self.loss(list(z.chunk(self.n_views)))
