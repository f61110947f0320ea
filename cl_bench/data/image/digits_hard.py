"""``digits-hard``: the plain digits under pose, photometric change, noise and clutter.

Every digit is upsampled (bicubic) to ``digit_size`` px and pasted onto a ``canvas`` x ``canvas``
image under a random rotation, scale and shift; ``clutter`` fragments of digits of OTHER
classes (a random half of each, cut by a random line) are pasted around it; then the
background level and ink contrast change and gaussian noise is added. All of it is fixed
per image by ``dataset_seed``, so every method and every run sees the same pixels, and the
train/test split is the plain digits' split (same indices for the same ``test_fraction``
and ``split_seed``). Raw pixels score far below their plain-digits score on it; a learned,
shift/rotation-tolerant representation can still read the digits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from cl_bench.components import register
from cl_bench.data.image.digits import DigitsParams, build_split_data, load_digit_arrays
from cl_bench.data.image.types import ImageClassificationData
from cl_bench.specs import validate_params


class DigitsHardParams(DigitsParams):
    """Generation parameters (all fixed by the task) plus the plain digits' split parameters."""

    canvas: int = Field(default=32, ge=12, le=256)
    digit_size: int = Field(default=18, ge=8, le=128)
    dataset_seed: int = Field(default=0, ge=0)
    max_rotation: float = Field(default=25.0, ge=0.0, le=180.0)
    scale_range: tuple[float, float] = (0.8, 1.25)
    max_shift: float = Field(default=2.5, ge=0.0)
    contrast_range: tuple[float, float] = (0.6, 1.0)
    max_background: float = Field(default=0.3, ge=0.0, lt=1.0)
    noise_std: float = Field(default=0.08, ge=0.0, le=1.0)
    clutter: int = Field(default=2, ge=0, le=16)

    @field_validator("scale_range")
    @classmethod
    def _check_scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1]:
            raise ValueError("must be [low, high] with 0 < low <= high")
        return v

    @field_validator("contrast_range")
    @classmethod
    def _check_contrast(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < v[0] <= v[1] <= 1.0:
            raise ValueError("must be [low, high] with 0 < low <= high <= 1")
        return v


def _rotations(angles: np.ndarray) -> np.ndarray:
    """[..., 2, 2] rotation matrices (radians, counter-clockwise)."""
    c, s = np.cos(angles), np.sin(angles)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _paste(
    src: torch.Tensor, canvas: int, angle: np.ndarray, scale: np.ndarray, shift: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp square sources [N, 1, s, s] onto [N, 1, canvas, canvas].

    ``angle`` (radians), ``scale`` (display size / s) and ``shift`` (px, [N, 2] as x, y from
    the canvas centre) describe where each source lands. Returns the warped images and the
    sampling grid (source coordinates in [-1, 1] for every canvas pixel).
    """
    s = src.shape[-1]
    inv_rot = _rotations(-angle)  # canvas -> source orientation
    a = inv_rot * (canvas / (s * scale))[:, None, None]
    b = -np.einsum("nij,nj->ni", inv_rot, shift) * (2.0 / (s * scale))[:, None]
    theta = torch.from_numpy(np.concatenate([a, b[:, :, None]], axis=2))
    grid = F.affine_grid(theta, [len(src), 1, canvas, canvas], align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out, grid


def render_digits_hard(
    params: DigitsHardParams | dict[str, Any] | None = None,
    images: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render the hard twin: (uint8 images [N, 1, canvas, canvas], int64 labels [N]).

    ``images`` (uint8 [N, 8, 8] or [N, H, W]) and ``labels`` default to all 1,797 sklearn
    digits in their original order. Same ``params`` -> identical bytes; global RNG state is
    neither read nor changed.
    """
    if not isinstance(params, DigitsHardParams):
        params = validate_params(DigitsHardParams, params, "dataset 'digits-hard' params")
    if images is None or labels is None:
        images, labels = load_digit_arrays()
    labels = np.asarray(labels, dtype=np.int64)
    n, c = len(images), params.canvas
    rng = np.random.Generator(np.random.PCG64(params.dataset_seed))

    src = torch.from_numpy(np.asarray(images, dtype=np.float64)[:, None] / 255.0)
    src = F.interpolate(src, size=(params.digit_size, params.digit_size), mode="bicubic", align_corners=False)
    src = src.clamp_(0.0, 1.0)

    log_lo, log_hi = np.log(params.scale_range[0]), np.log(params.scale_range[1])
    max_rot = math.radians(params.max_rotation)
    angle = rng.uniform(-max_rot, max_rot, n)
    scale = np.exp(rng.uniform(log_lo, log_hi, n))
    shift = rng.uniform(-params.max_shift, params.max_shift, (n, 2))
    ink, _ = _paste(src, c, angle, scale, shift)

    for _ in range(params.clutter):
        # a digit of another class, cut in half by a random line, placed away from the digit's centre
        pick = _pick_other_class(labels, rng)
        f_angle = rng.uniform(-math.pi, math.pi, n)
        f_scale = np.exp(rng.uniform(log_lo, log_hi, n))
        direction = rng.uniform(-math.pi, math.pi, n)
        radius = rng.uniform(0.45, 0.7, n) * c
        f_shift = shift + radius[:, None] * np.stack([np.cos(direction), np.sin(direction)], 1)
        frag, grid = _paste(src[pick], c, f_angle, f_scale, f_shift)
        cut = rng.uniform(-math.pi, math.pi, n)
        normal = torch.from_numpy(np.stack([np.cos(cut), np.sin(cut)], 1))
        offset = torch.from_numpy(rng.uniform(-0.2, 0.2, n))
        keep = (grid * normal[:, None, None, :]).sum(-1) > offset[:, None, None]
        ink = torch.maximum(ink, frag * keep[:, None].to(frag.dtype))

    background = rng.uniform(0.0, params.max_background, n)
    contrast = rng.uniform(params.contrast_range[0], params.contrast_range[1], n) * (1.0 - background)
    pixels = background[:, None, None, None] + contrast[:, None, None, None] * ink.numpy()
    pixels = pixels + rng.normal(0.0, params.noise_std, pixels.shape)
    out = np.floor(np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out, labels


def _pick_other_class(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For every item, the index of a random item of a different class (any item if only one class)."""
    classes, inverse = np.unique(labels, return_inverse=True)
    k = len(classes)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    other = (inverse + rng.integers(1, k, len(labels))) % k if k > 1 else inverse
    return order[starts[other] + (rng.random(len(labels)) * counts[other]).astype(np.int64)]


@register("dataset", "digits-hard")
def load(params: dict[str, Any] | None, data_root: Path | None) -> ImageClassificationData:
    """The hard twin of ``digits`` (generated in memory; ``data_root`` is ignored)."""
    p = validate_params(DigitsHardParams, params, "dataset 'digits-hard' params")
    images, labels = render_digits_hard(p)
    meta = {"source": "sklearn.datasets.load_digits, re-rendered", "generator": p.model_dump(mode="json")}
    return build_split_data("digits-hard", images, labels, p, meta)
