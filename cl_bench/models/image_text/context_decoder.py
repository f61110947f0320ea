"""DenseCLIP's language-guidance parts (Rao et al., CVPR 2022, arXiv 2112.01518), written from the
paper's equations and read against raoyongming/DenseCLIP ``segmentation/denseclip/`` (never copied).

- :func:`pixel_text_score_map` (Eq. 4): ``s[b, k, h, w] = <z_bar[b, :, h, w], t_bar[b, k, :]>`` with
  ``z_bar`` the L2-normalised dense visual embeddings [B, C, H, W] and ``t_bar`` the L2-normalised
  class text embeddings [B, K, C] — a cosine, no temperature. The temperature ``tau`` (0.07)
  enters only the auxiliary pixel-text loss: cross-entropy of ``s / tau`` upsampled to the label.
- :class:`ContextDecoder` (post-model prompting, Eq. 6–7): the text embeddings are the queries and
  the visual context ``[z_global; z_1..z_HW]`` the memory of a small transformer decoder;
  ``memory = LN(Linear(LN(v)))``, ``x = Linear(LN(t))``, then per layer (pre-norm)
  ``x += SelfAttn(LN1 x)``, ``x += CrossAttn(LN2 x, memory)``, ``x += Dropout(MLP(LN3 x))`` (MLP:
  Linear d->4d, GELU, Dropout, Linear 4d->d), and ``out = Linear(LN(x))`` back to the text width.
  The caller adds it as ``t <- t + gamma * out`` with a learnable per-channel ``gamma`` (init 1e-4).
- :class:`Attention`: multi-head attention with separate q/k/v projections without bias,
  scale ``head_dim ** -0.5`` and an output projection (with bias) followed by dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pixel_text_score_map(visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine between every position of ``visual`` [B, C, H, W] and every class of ``text`` [B, K, C]
    -> [B, K, H, W]."""
    if visual.shape[1] != text.shape[-1]:
        raise ValueError(f"visual has {visual.shape[1]} channels, text {text.shape[-1]}")
    return torch.einsum("bchw,bkc->bkhw", F.normalize(visual, dim=1), F.normalize(text, dim=-1))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape
        m = k.shape[1]
        h = self.heads
        qh = self.q_proj(q).reshape(b, n, h, c // h).transpose(1, 2)
        kh = self.k_proj(k).reshape(b, m, h, c // h).transpose(1, 2)
        vh = self.v_proj(v).reshape(b, m, h, c // h).transpose(1, 2)
        attn = (qh @ kh.transpose(-2, -1) * self.scale).softmax(dim=-1)
        out = (attn @ vh).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class DecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(width, heads, dropout)
        self.cross_attn = Attention(width, heads, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        q = self.norm1(x)
        x = x + self.self_attn(q, q, q)
        x = x + self.cross_attn(self.norm2(x), memory, memory)
        return x + self.dropout(self.mlp(self.norm3(x)))


class ContextDecoder(nn.Module):
    """Text embeddings [B, K, D] attend to the visual context [B, N, D]; returns the update [B, K, D]."""

    def __init__(self, visual_dim: int, width: int = 256, heads: int = 4, layers: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        self.memory_proj = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width), nn.LayerNorm(width))
        self.text_proj = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width))
        self.decoder = nn.ModuleList([DecoderLayer(width, heads, dropout) for _ in range(layers)])
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, visual_dim))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        memory = self.memory_proj(visual)
        x = self.text_proj(text)
        for layer in self.decoder:
            x = layer(x, memory)
        return self.out_proj(x)
