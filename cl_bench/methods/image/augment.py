"""Batch image augmentations for contrastive training, vectorised over the batch.

Every sample gets its own random parameters, drawn from a ``torch.Generator`` (so a seed
fixes them): one affine warp (random resized crop, rotation, translation, optional
horizontal flip) done with a single ``affine_grid``/``grid_sample`` call for the whole
batch, then brightness/contrast jitter, gaussian noise and random erasing (cutout).
Defaults suit small grayscale images such as digits on a 32x32 canvas (no flip).
Input and output: float tensors [N, C, H, W] in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cl_bench.specs import validate_params


class AugmentConfig(BaseModel):
    """The ``train.augment`` block of a method (all keys optional)."""

    model_config = ConfigDict(extra="forbid")

    crop_scale: tuple[float, float] = (0.5, 1.0)  # area fraction of the crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio (w/h) of the crop
    rotation_deg: float = Field(default=15.0, ge=0, le=180)  # uniform in [-r, r]
    translate: float = Field(default=0.1, ge=0, le=1)  # shift, fraction of the image size
    hflip: float = Field(default=0.0, ge=0, le=1)  # probability of a horizontal flip
    padding: Literal["zeros", "border", "reflection"] = "border"  # fill outside the image (edge pixels)
    brightness: float = Field(default=0.4, ge=0, le=1)  # factor uniform in [1-b, 1+b]
    contrast: float = Field(default=0.4, ge=0, le=1)  # factor uniform in [1-c, 1+c]
    noise_std: float = Field(default=0.03, ge=0)  # gaussian noise added to pixels
    erase_prob: float = Field(default=0.25, ge=0, le=1)  # probability of one cutout
    erase_scale: tuple[float, float] = (0.02, 0.15)  # area fraction of the cutout
    erase_value: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _ranges(self) -> AugmentConfig:
        for name in ("crop_scale", "crop_ratio", "erase_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {(lo, hi)}")
        if self.crop_scale[1] > 1 or self.erase_scale[1] > 1:
            raise ValueError("crop_scale and erase_scale are area fractions: at most 1")
        return self


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device) * (hi - lo) + lo


def _log_uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return torch.exp(_uniform(n, math.log(lo), math.log(hi), gen))


class Augmenter:
    """``Augmenter(config)(images, generator) -> augmented images`` (same shape, in [0, 1])."""

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    @classmethod
    def from_params(cls, params: dict[str, Any] | None, where: str = "train.augment") -> Augmenter:
        """Build from a YAML dict; an unknown or bad key raises ClBenchError naming it."""
        return cls(validate_params(AugmentConfig, params, where=where))

    def affine_params(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Per-sample affine matrices [n, 2, 3] mapping output to input coords in [-1, 1]."""
        c = self.config
        area = _uniform(n, *c.crop_scale, gen)
        ratio = _log_uniform(n, *c.crop_ratio, gen)
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop size, fraction of the image
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (_uniform(n, -1, 1, gen) * (1 - w)) + _uniform(n, -1, 1, gen) * 2 * c.translate
        cy = (_uniform(n, -1, 1, gen) * (1 - h)) + _uniform(n, -1, 1, gen) * 2 * c.translate
        angle = _uniform(n, -c.rotation_deg, c.rotation_deg, gen) * (math.pi / 180)
        flip = torch.where(torch.rand(n, generator=gen, device=gen.device) < c.hflip, -1.0, 1.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [
                torch.stack([w * cos * flip, -w * sin, cx], dim=1),
                torch.stack([h * sin * flip, h * cos, cy], dim=1),
            ],
            dim=1,
        )
        return theta

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
        c, gen = self.config, generator
        n, ch, hgt, wid = images.shape
        dev = images.device

        def to_dev(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=dev, dtype=images.dtype)

        theta = to_dev(self.affine_params(n, gen))
        grid = F.affine_grid(theta, [n, ch, hgt, wid], align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode=c.padding, align_corners=False)

        bright = to_dev(_uniform(n, 1 - c.brightness, 1 + c.brightness, gen)).view(n, 1, 1, 1)
        contrast = to_dev(_uniform(n, 1 - c.contrast, 1 + c.contrast, gen)).view(n, 1, 1, 1)
        out = out * bright
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * contrast + mean

        if c.noise_std > 0:
            out = out + to_dev(torch.randn(out.shape, generator=gen, device=gen.device)) * c.noise_std

        if c.erase_prob > 0:
            out = self._erase(out, gen, to_dev)
        return out.clamp_(0.0, 1.0)

    def _erase(self, images: torch.Tensor, gen: torch.Generator, to_dev: Any) -> torch.Tensor:
        """Fill one random rectangle per selected sample with ``erase_value``."""
        c = self.config
        n, _, hgt, wid = images.shape
        area = _uniform(n, *c.erase_scale, gen)
        ratio = _log_uniform(n, 0.3, 3.3, gen)
        eh = (torch.sqrt(area / ratio) * hgt).clamp(1, hgt)
        ew = (torch.sqrt(area * ratio) * wid).clamp(1, wid)
        y0 = _uniform(n, 0, 1, gen) * (hgt - eh)
        x0 = _uniform(n, 0, 1, gen) * (wid - ew)
        on = torch.rand(n, generator=gen, device=gen.device) < c.erase_prob
        ys = torch.arange(hgt, device=gen.device).view(1, hgt, 1)
        xs = torch.arange(wid, device=gen.device).view(1, 1, wid)
        inside = (
            (ys >= y0.view(n, 1, 1).floor())
            & (ys < (y0 + eh).view(n, 1, 1).floor())
            & (xs >= x0.view(n, 1, 1).floor())
            & (xs < (x0 + ew).view(n, 1, 1).floor())
            & on.view(n, 1, 1)
        )
        mask = inside.unsqueeze(1).to(images.device)
        return images.masked_fill(mask, c.erase_value)
