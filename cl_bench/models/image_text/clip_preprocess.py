"""CLIP-style image preprocessing on tensors: resize, centre crop, normalise.

Every image–text adapter receives float [N, 3, H, W] in [0, 1] and applies its model's own
preprocessing here: resize (shortest side to the crop size, or "squash" to it exactly; bicubic
with antialiasing, clamped back to [0, 1] as an 8-bit pipeline would), centre crop, then
``(x - mean) / std`` per channel. This is the tensor form of open_clip's ``preprocess_val`` and
of ``CLIPImageProcessor`` (which work on PIL images; results agree up to interpolation rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from cl_bench.errors import ClBenchError


def resize_center_crop(
    images: torch.Tensor, size: tuple[int, int], mode: str = "shortest", interpolation: str = "bicubic",
    shortest_edge: int | None = None,
) -> torch.Tensor:
    """Resize then centre-crop ``images`` [N, C, H, W] to ``size`` (h, w)."""
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got {tuple(images.shape)}")
    h, w = images.shape[-2:]
    th, tw = size
    if mode == "squash":
        new = (th, tw)
    elif mode == "shortest":
        edge = shortest_edge or min(th, tw)
        scale = edge / min(h, w)
        new = (max(1, round(h * scale)), max(1, round(w * scale)))
    else:
        raise ClBenchError(f"resize mode {mode!r} is not supported (shortest | squash)")
    if new != (h, w):
        interp = "bicubic" if interpolation not in ("bilinear", "nearest") else interpolation
        images = F.interpolate(images, size=new, mode=interp, antialias=interp != "nearest",
                               align_corners=False if interp != "nearest" else None).clamp_(0.0, 1.0)
    top = max(0, (images.shape[-2] - th) // 2)
    left = max(0, (images.shape[-1] - tw) // 2)
    out = images[..., top : top + th, left : left + tw]
    if out.shape[-2:] != (th, tw):  # smaller than the crop: pad with zeros, centred (as torchvision)
        ph, pw = th - out.shape[-2], tw - out.shape[-1]
        out = F.pad(out, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
    return out


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(list(mean), dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(list(std), dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - m) / s
