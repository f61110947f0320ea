"""``simclr``: NT-Xent (InfoNCE over 2N views) with a projection MLP (Chen et al., arXiv 2002.05709).

The two-view machinery (projection head, params, one-pass encoding) is in :mod:`cl_bench.methods.image.two_view`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cl_bench.components import register
from cl_bench.methods.image.two_view import TwoViewContrastive


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


@register("objective", "simclr")
class SimCLR(TwoViewContrastive):
    """SimCLR: NT-Xent between the projections of two augmented views."""

    objective_name = "simclr"

    def loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, self.params.temperature)
