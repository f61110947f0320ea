"""Static n-gram heads (Akyürek et al. 2024, "In-Context Language Learning: Architectures and
Algorithms", arXiv 2401.12973, Section 7; berlino/seq_icl ``src/models/sequence/rnn/ngram.py``):
a fixed, parameter-free induction head over exact n-gram matches, with two learned linear maps.

For token ids ``x`` [B, T] and hidden states ``h`` [B, T, H], position ``i`` attends uniformly to
every earlier position ``j + 1`` (``j + 1 < i``) whose preceding n tokens equal the n tokens ending
at ``i`` — ``x[j-k] == x[i-k]`` for ``k = 0..n-1``, all indices inside the sequence — i.e. to the
tokens that FOLLOWED earlier occurrences of the current n-gram; no match gives zeros:

    IH_n(x, h)_i = mean_{j : match_n(i, j), j + 1 < i} h_{j+1}

The head's output is ``t0(IH_n(x, h)) + t1(h)`` (two ``nn.Linear``), as seq_icl's ``Ngram``.
:class:`NgramBlock` wraps it like the repo's pre-norm ``Block``: ``r = h + NGH(LN(h))``, then
``r + MLP(LN(r))`` (GELU MLP, 4x wide). Which layers of the paper's models are n-gram blocks is
not in the public configs: here they are inserted after the token embedding, before the
backbone (see ``ngram_heads`` in :mod:`cl_bench.models.lm.seq_models`).
"""

from __future__ import annotations

import torch
from torch import nn


def ngram_match_mask(ids: torch.Tensor, n: int) -> torch.Tensor:
    """[B, T, T] bool: ``mask[b, i, m]`` when position ``m`` follows an earlier occurrence of the n-gram
    ending at ``i`` (``m = j + 1`` with ``match_n(i, j)``) and ``m < i``."""
    b, t = ids.shape
    eq = ids[:, :, None] == ids[:, None, :]  # eq[b, i, j]: x_i == x_j
    earlier = torch.ones(t, t, dtype=torch.bool, device=ids.device).tril(-1)  # j < i
    match = eq & earlier
    for k in range(1, n):  # also x_{i-k} == x_{j-k}, both inside the sequence
        shifted = torch.zeros_like(eq)
        shifted[:, k:, k:] = eq[:, :-k, :-k]
        match &= shifted
    follow = torch.zeros_like(match)
    follow[:, :, 1:] = match[:, :, :-1]  # attend to j + 1
    return follow & earlier


def induction_average(ids: torch.Tensor, hidden: torch.Tensor, n: int) -> torch.Tensor:
    """IH_n: the mean of ``hidden`` over the positions :func:`ngram_match_mask` selects (0 if none)."""
    mask = ngram_match_mask(ids, n).to(hidden.dtype)
    counts = mask.sum(dim=2, keepdim=True)
    weights = mask / counts.clamp_min(1.0)
    return torch.einsum("bij,bjh->bih", weights, hidden)


class NgramHead(nn.Module):
    """``t0(IH_n(x, h)) + t1(h)``."""

    def __init__(self, width: int, n: int) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"an n-gram head needs n >= 1, got {n}")
        self.n = n
        self.t0 = nn.Linear(width, width)
        self.t1 = nn.Linear(width, width)

    def forward(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.t0(induction_average(ids, hidden, self.n)) + self.t1(hidden)


class NgramBlock(nn.Module):
    """Pre-norm residual block around an :class:`NgramHead`, then a GELU MLP."""

    def __init__(self, width: int, n: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.head = NgramHead(width, n)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        r = hidden + self.head(self.norm1(hidden), ids)
        return r + self.mlp(self.norm2(r))
