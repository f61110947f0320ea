"""``raw-pixels``: the identity encoder, a flattened image as its embedding (the floor baseline)."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict

from cl_bench.components import register
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.specs import validate_params


class RawPixelsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RawPixels(ImageEncoder):
    """Flattens [N, C, H, W] pixels to [N, C*H*W]; no parameters, empty state dict."""

    arch_name = "raw-pixels"

    def __init__(self, in_channels: int, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.image_shape = (in_channels, int(image_size[0]), int(image_size[1]))
        self.embed_dim = in_channels * self.image_shape[1] * self.image_shape[2]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"raw-pixels built for images {self.image_shape}, got {tuple(images.shape[1:])}")
        return images.flatten(1).float()

    def feature_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixels": images.float()}


@register("arch", "raw-pixels")
def build(params: dict, in_channels: int, image_size: tuple[int, int]) -> RawPixels:
    """Build ``raw-pixels`` (it takes no params)."""
    validate_params(RawPixelsParams, params, where="arch raw-pixels")
    return RawPixels(in_channels, image_size)
