"""The interfaces every model adapter implements."""

from __future__ import annotations

import torch
from torch import nn


class ImageEncoder(nn.Module):
    """Maps a batch of images [N, C, H, W] (float, in [0, 1]) to embeddings [N, D].

    Input normalisation (e.g. ImageNet mean/std) is the encoder's own business, so every
    dataset hands over plain [0, 1] pixels. ``feature_maps`` exposes the backbone's spatial
    features for dense tasks (name -> [N, C_i, H_i, W_i], ordered shallow to deep).
    """

    embed_dim: int

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self(images)

    def feature_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} exposes no feature maps")
