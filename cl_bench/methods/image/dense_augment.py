"""Two-view augmentation that remembers where each view came from (for pixel-level contrast).

A view is a random resized crop of the source image (box ``(x0, y0, x1, y1)`` in source
pixels: area fraction uniform in ``crop_scale``, aspect ratio log-uniform in ``crop_ratio``,
position uniform; torchvision's RandomResizedCrop distribution, clamped to the image instead
of re-drawn), resampled to ``out_size`` with bilinear ``roi_align``, optionally flipped
horizontally, then colour-jittered (brightness, contrast, saturation; random grayscale).
Everything is drawn from one ``torch.Generator``.

:func:`feature_coords` maps each cell of a view's feature map back to source pixels, and
:func:`positive_mask` marks the cross-view pairs whose source distance, divided by the larger
of the two views' feature-bin diagonals, is below the threshold (PixPro's ``T``, 0.7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torchvision.ops import roi_align


class DenseAugmentConfig(BaseModel):
    """The ``train.augment`` block of the pixel-level methods."""

    model_config = ConfigDict(extra="forbid")

    out_size: int = Field(default=64, ge=8)
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = Field(default=0.5, ge=0, le=1)
    brightness: float = Field(default=0.4, ge=0, le=1)
    contrast: float = Field(default=0.4, ge=0, le=1)
    saturation: float = Field(default=0.4, ge=0, le=1)
    grayscale: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _ranges(self) -> DenseAugmentConfig:
        for name in ("crop_scale", "crop_ratio"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high")
        if self.crop_scale[1] > 1:
            raise ValueError("crop_scale is an area fraction: at most 1")
        return self


@dataclass
class Views:
    images: torch.Tensor  # [N, 3, S, S]
    boxes: torch.Tensor  # [N, 4] source pixels (x0, y0, x1, y1)
    flipped: torch.Tensor  # bool [N]


def _u(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device) * (hi - lo) + lo


def sample_boxes(n: int, height: int, width: int, cfg: DenseAugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """[n, 4] crop boxes in source pixels."""
    area = _u(n, *cfg.crop_scale, gen) * height * width
    ratio = torch.exp(_u(n, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), gen))
    w = torch.sqrt(area * ratio).clamp(1.0, float(width))
    h = torch.sqrt(area / ratio).clamp(1.0, float(height))
    x0 = torch.rand(n, generator=gen, device=gen.device) * (width - w)
    y0 = torch.rand(n, generator=gen, device=gen.device) * (height - h)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def crop_views(images: torch.Tensor, boxes: torch.Tensor, flipped: torch.Tensor, out_size: int) -> torch.Tensor:
    """Bilinear resample of each box to ``out_size`` x ``out_size``; flipped rows mirrored."""
    rois = torch.cat([torch.arange(len(images), device=images.device, dtype=images.dtype)[:, None],
                      boxes.to(images.dtype)], dim=1)
    out = roi_align(images, rois, (out_size, out_size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return torch.where(flipped[:, None, None, None], out.flip(-1), out)


def colour_jitter(x: torch.Tensor, cfg: DenseAugmentConfig, gen: torch.Generator) -> torch.Tensor:
    n = len(x)
    b = _u(n, 1 - cfg.brightness, 1 + cfg.brightness, gen).view(n, 1, 1, 1)
    c = _u(n, 1 - cfg.contrast, 1 + cfg.contrast, gen).view(n, 1, 1, 1)
    s = _u(n, 1 - cfg.saturation, 1 + cfg.saturation, gen).view(n, 1, 1, 1)
    gray_p = torch.rand(n, generator=gen, device=gen.device).view(n, 1, 1, 1) < cfg.grayscale
    x = (x * b).clamp(0, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * c + mean).clamp(0, 1)
    gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = ((x - gray) * s + gray).clamp(0, 1)
    return torch.where(gray_p, gray.expand_as(x), x)


def make_views(images: torch.Tensor, cfg: DenseAugmentConfig, gen: torch.Generator) -> Views:
    n, _, h, w = images.shape
    boxes = sample_boxes(n, h, w, cfg, gen)
    flipped = torch.rand(n, generator=gen, device=gen.device) < cfg.hflip
    views = colour_jitter(crop_views(images, boxes, flipped, cfg.out_size), cfg, gen)
    return Views(views, boxes, flipped)


def feature_coords(boxes: torch.Tensor, flipped: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """[N, fh*fw, 2] source (x, y) of each feature cell's centre, row-major over the view."""
    t_x = (torch.arange(fw, device=boxes.device, dtype=boxes.dtype) + 0.5) / fw
    t_y = (torch.arange(fh, device=boxes.device, dtype=boxes.dtype) + 0.5) / fh
    t_x = torch.where(flipped[:, None], 1 - t_x[None], t_x[None])  # [N, fw]
    x = boxes[:, 0:1] + (boxes[:, 2:3] - boxes[:, 0:1]) * t_x
    y = boxes[:, 1:2] + (boxes[:, 3:4] - boxes[:, 1:2]) * t_y[None]
    gx = x[:, None, :].expand(-1, fh, -1)
    gy = y[:, :, None].expand(-1, -1, fw)
    return torch.stack([gx, gy], dim=-1).reshape(len(boxes), fh * fw, 2)


def bin_diagonal(boxes: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """[N] the diagonal of one feature bin of each view, in source pixels."""
    return torch.sqrt(((boxes[:, 2] - boxes[:, 0]) / fw) ** 2 + ((boxes[:, 3] - boxes[:, 1]) / fh) ** 2)


def positive_mask(v1: Views, v2: Views, fh: int, fw: int, threshold: float) -> torch.Tensor:
    """bool [N, P, P]: cell i of view 1 and cell j of view 2 are a positive pair."""
    c1 = feature_coords(v1.boxes, v1.flipped, fh, fw)
    c2 = feature_coords(v2.boxes, v2.flipped, fh, fw)
    dist = torch.cdist(c1, c2)
    scale = torch.maximum(bin_diagonal(v1.boxes, fh, fw), bin_diagonal(v2.boxes, fh, fw))
    return dist / scale[:, None, None] < threshold
