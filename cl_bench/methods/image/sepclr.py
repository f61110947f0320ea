"""``sepclr``: SepCLR (Louiset et al., "Separating common from salient patterns with Contrastive
Representation Learning", ICLR 2024, arXiv 2402.11928).

Contrastive analysis: a background set (label 0) has only common patterns; a target set
(label 1) has the common patterns plus salient ones. An ``sepclr-pair`` encoder gives each
image a common representation c and a salient one s; the objective's projection heads map
them to h_c, h_s. With the reference code's kernels (neurospin-projects/2024_rlouiset_sep_clr,
``losses.py``; ``n(·)`` = L2 normalisation, tau = 0.5)::

    align(x, y)  = mean_i ||x_i - y_i||² / (2 tau)
    uniform(x)   = log mean_{i<j} exp(-||x_i - x_j||² / (2 tau))
    jem(c, s)    = mean_i log mean_j exp(-||c_i - c_j||² / (2 tau)) · exp(-||s_i - s_j||² / (2 tau))

and s' = h_s with every background row replaced by the null vector (the "s'-uniformity"), the
loss of two views 1, 2 is::

    common   = align(n(h_c1), n(h_c2)) + w_u · ½ [uniform(n(h_c1)) + uniform(n(h_c2))]
    salient  = align(h_s1[target], h_s2[target]) + w_u · ½ [uniform(s'_1) + uniform(s'_2)]
    info-less= ½ [align(0, h_s1[background]) + align(0, h_s2[background])]
    k-JEM    = ½ [jem(n(h_c1), s'_1) + jem(n(h_c2), s'_2)]
    L = common + salient_beta · salient + reg_beta · info-less + jem_lambda · k-JEM

(the salient heads are not normalised; a term over an empty set, e.g. a batch without targets,
is 0). Defaults are the reference CIFAR-MNIST script's: w_u = 2, salient_beta = reg_beta =
1000, jem_lambda = 10, heads Linear(d, 128)-BN-ReLU-Linear(128, d). ``common_dim`` must match
the encoder's (default: half its embedding, as sepclr-pair's default 32 + 32).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.methods.objective import Objective
from cl_bench.specs import validate_params


def align_term(x: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """mean_i ||x_i - y_i||² / (2 tau); 0 for empty inputs."""
    if x.shape[0] == 0:
        return x.new_zeros(())
    return (x - y).pow(2).sum(1).div(2 * tau).mean()


def uniform_term(x: torch.Tensor, tau: float) -> torch.Tensor:
    """log mean over pairs i < j of exp(-||x_i - x_j||² / (2 tau)); 0 with fewer than 2 rows."""
    if x.shape[0] < 2:
        return x.new_zeros(())
    return torch.pdist(x, p=2).pow(2).mul(-1 / (2 * tau)).exp().mean().log()


def jem_term(c: torch.Tensor, s: torch.Tensor, tau: float) -> torch.Tensor:
    """mean_i log mean_j k(c_i, c_j) k(s_i, s_j) with the gaussian kernel k (j = i included)."""
    kc = torch.cdist(c, c, p=2.0).pow(2).mul(-1 / (2 * tau)).exp()
    ks = torch.cdist(s, s, p=2.0).pow(2).mul(-1 / (2 * tau)).exp()
    return (kc * ks).mean(-1).log().mean()


def sepclr_loss(
    hc1: torch.Tensor,
    hc2: torch.Tensor,
    hs1: torch.Tensor,
    hs2: torch.Tensor,
    is_target: torch.Tensor,
    tau: float = 0.5,
    uniform_weight: float = 2.0,
    salient_beta: float = 1000.0,
    reg_beta: float = 1000.0,
    jem_lambda: float = 10.0,
) -> dict[str, torch.Tensor]:
    """SepCLR's terms and total for projected common (hc) and salient (hs) heads of two views."""
    tgt = is_target.bool()
    bg = ~tgt
    n1, n2 = F.normalize(hc1, dim=1), F.normalize(hc2, dim=1)
    s1 = torch.where(bg[:, None], torch.zeros_like(hs1), hs1)  # s': background -> null vector
    s2 = torch.where(bg[:, None], torch.zeros_like(hs2), hs2)
    terms = {
        "common": align_term(n1, n2, tau) + uniform_weight * (uniform_term(n1, tau) + uniform_term(n2, tau)) / 2,
        "salient": align_term(hs1[tgt], hs2[tgt], tau)
        + uniform_weight * (uniform_term(s1, tau) + uniform_term(s2, tau)) / 2,
        "info_less": (align_term(s1[bg], hs1[bg], tau) + align_term(s2[bg], hs2[bg], tau)) / 2,
        "jem": (jem_term(n1, s1, tau) + jem_term(n2, s2, tau)) / 2,
    }
    terms["total"] = (
        terms["common"] + salient_beta * terms["salient"] + reg_beta * terms["info_less"] + jem_lambda * terms["jem"]
    )
    return terms


class SepCLRParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tau: float = Field(default=0.5, gt=0)
    uniform_weight: float = Field(default=2.0, ge=0)
    salient_beta: float = Field(default=1000.0, ge=0)
    reg_beta: float = Field(default=1000.0, ge=0)
    jem_lambda: float = Field(default=10.0, ge=0)
    proj_hidden: int = Field(default=128, ge=1)
    common_dim: int | None = Field(default=None, ge=1)  # None: half of the encoder's embedding


def _head(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, dim))


@register("objective", "sepclr")
class SepCLR(Objective):
    """SepCLR on an ``sepclr-pair`` encoder; labels are 0 (background) / 1 (target)."""

    n_views = 2
    needs_labels = True

    def __init__(self, embed_dim: int, num_classes: int, **params: Any) -> None:
        super().__init__(embed_dim, num_classes)
        self.params = validate_params(SepCLRParams, params, where="train.params (objective sepclr)")
        common = self.params.common_dim if self.params.common_dim is not None else embed_dim // 2
        if not 0 < common < embed_dim:
            raise ClBenchError(
                f"train.params.common_dim of objective sepclr must be in 1..{embed_dim - 1} "
                f"(the encoder embeds to {embed_dim}), got {common}"
            )
        self.common_dim, self.salient_dim = common, embed_dim - common
        h = self.params.proj_hidden
        self.heads = nn.ModuleDict({"common": _head(common, h), "salient": _head(embed_dim - common, h)})
        self._checked = False

    def _check(self, encoder: nn.Module, labels: torch.Tensor) -> None:
        if not hasattr(encoder, "parts"):
            raise ClBenchError(
                f"objective sepclr needs an encoder with common and salient parts (arch sepclr-pair), "
                f"got {type(encoder).__name__}"
            )
        if (encoder.common_dim, encoder.salient_dim) != (self.common_dim, self.salient_dim):
            raise ClBenchError(
                f"objective sepclr: train.params.common_dim gives {self.common_dim}/{self.salient_dim} "
                f"common/salient dims but the encoder has {encoder.common_dim}/{encoder.salient_dim}; "
                f"set common_dim: {encoder.common_dim}"
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > 1):
            raise ClBenchError(
                "objective sepclr needs background (0) / target (1) labels; train it on a "
                "contrastive-analysis dataset such as digits-salient"
            )
        self._checked = True

    def forward(self, encoder: nn.Module, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if not self._checked:
            self._check(encoder, labels)
        c, s = encoder.parts(torch.cat(views))
        hc1, hc2 = self.heads["common"](c).chunk(2)
        hs1, hs2 = self.heads["salient"](s).chunk(2)
        p = self.params
        return sepclr_loss(
            hc1, hc2, hs1, hs2, labels, p.tau, p.uniform_weight, p.salient_beta, p.reg_beta, p.jem_lambda
        )["total"]
