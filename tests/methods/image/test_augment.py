"""Batch augmentations: determinism, ranges, and each transform against a direct computation."""

from __future__ import annotations

import pytest
import torch

from cl_bench.errors import ClBenchError
from cl_bench.methods.image.augment import AugmentConfig, Augmenter

IDENTITY = {
    "crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "rotation_deg": 0.0, "translate": 0.0, "hflip": 0.0,
    "brightness": 0.0, "contrast": 0.0, "noise_std": 0.0, "erase_prob": 0.0,
}


def _images(n: int = 8, c: int = 1, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _aug(**over: object) -> Augmenter:
    return Augmenter.from_params({**IDENTITY, **over})


def test_defaults_shape_range_and_determinism() -> None:
    aug = Augmenter.from_params({})
    assert aug.config.hflip == 0.0  # digits: no flips by default
    x = _images(c=3)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, x)


def test_parameters_are_per_sample() -> None:
    x = _images(n=1).expand(6, -1, -1, -1).contiguous()
    out = Augmenter.from_params({})(x, torch.Generator().manual_seed(0))
    for i in range(1, 6):
        assert not torch.allclose(out[0], out[i])


def test_identity_config_returns_the_input() -> None:
    x = _images(c=3, size=16)
    assert torch.allclose(_aug()(x, torch.Generator().manual_seed(0)), x, atol=1e-5)


def test_hflip_mirrors() -> None:
    x = _images(size=12)
    out = _aug(hflip=1.0)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x.flip(-1), atol=1e-5)


def test_crop_zooms_into_a_window_inside_the_image() -> None:
    aug = _aug(crop_scale=(0.25, 0.25))
    theta = aug.affine_params(200, torch.Generator().manual_seed(0))
    assert torch.allclose(theta[:, 0, 0], torch.full((200,), 0.5))
    assert torch.allclose(theta[:, 1, 1], torch.full((200,), 0.5))
    assert torch.allclose(theta[:, 0, 1], torch.zeros(200)) and torch.allclose(theta[:, 1, 0], torch.zeros(200))
    assert float(theta[:, :, 2].abs().max()) <= 0.5 + 1e-6  # window stays inside [-1, 1]
    # an 8x8 block of ones at the crop centre of a 32x32 image becomes 16x16 after a 2x zoom
    x = torch.zeros(1, 1, 32, 32)
    x[..., 12:20, 12:20] = 1.0
    zoom = _aug(crop_scale=(0.25, 0.25))
    zoom.affine_params = lambda n, g: torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # type: ignore[method-assign]
    out = zoom(x, torch.Generator().manual_seed(0))
    assert float(out.sum()) == pytest.approx(16 * 16, rel=0.05)


def test_rotation_by_a_right_angle_is_rot90() -> None:
    x = _images(n=1, size=10)
    aug = _aug(rotation_deg=90.0)
    n = 400
    theta = aug.affine_params(n, torch.Generator().manual_seed(0))
    angles = torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 1, 1]))
    assert float(angles.abs().max()) <= 90.0 + 1e-4 and float(angles.abs().max()) > 80.0
    aug.affine_params = lambda n, g: torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])  # type: ignore[method-assign]
    out = aug(x, torch.Generator().manual_seed(0))
    assert any(torch.allclose(out, torch.rot90(x, k, dims=(2, 3)), atol=1e-5) for k in (1, 3))


def test_brightness_scales_each_image_by_one_factor() -> None:
    x = _images(size=8) * 0.5 + 0.1  # in [0.1, 0.6]: no clamping at factor <= 1.5
    out = _aug(brightness=0.5)(x, torch.Generator().manual_seed(3))
    ratio = out / x
    per_image = ratio.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-5)
    assert float(per_image.min()) >= 0.5 - 1e-5 and float(per_image.max()) <= 1.5 + 1e-5
    assert float(per_image[:, 0].std()) > 0.01


def test_contrast_keeps_the_mean_and_scales_deviations() -> None:
    x = _images(size=8) * 0.4 + 0.3  # mid-range: no clamping at factor <= 1.5
    out = _aug(contrast=0.5)(x, torch.Generator().manual_seed(4))
    mean_in = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(out.mean(dim=(1, 2, 3), keepdim=True), mean_in, atol=1e-5)
    factor = ((out - mean_in) / (x - mean_in)).flatten(1)
    assert torch.allclose(factor, factor[:, :1].expand_as(factor), atol=1e-3)


def test_noise_has_the_configured_std() -> None:
    x = torch.full((16, 1, 32, 32), 0.5)
    out = _aug(noise_std=0.05)(x, torch.Generator().manual_seed(5))
    assert float((out - x).std()) == pytest.approx(0.05, rel=0.05)
    assert float((out - x).mean()) == pytest.approx(0.0, abs=0.005)


def test_erasing_cuts_one_rectangle() -> None:
    x = torch.ones(20, 1, 16, 16)
    out = _aug(erase_prob=1.0, erase_scale=(0.1, 0.2), erase_value=0.0)(x, torch.Generator().manual_seed(6))
    for img in out[:, 0]:
        ys, xs = torch.nonzero(img == 0, as_tuple=True)
        assert len(ys) > 0
        box = img[int(ys.min()) : int(ys.max()) + 1, int(xs.min()) : int(xs.max()) + 1]
        assert bool((box == 0).all())  # the erased pixels form a filled rectangle
        assert len(ys) <= 0.2 * 256 * 1.6  # about the configured area (rounding to whole pixels)
    none = _aug(erase_prob=0.0)(x, torch.Generator().manual_seed(6))
    assert torch.equal(none, x)


@pytest.mark.parametrize("params, field", [
    ({"rotaton_deg": 5}, "rotaton_deg"),
    ({"hflip": 2.0}, "hflip"),
    ({"crop_scale": [0.9, 0.1]}, "crop_scale"),
])
def test_bad_config_is_a_one_line_error(params: dict, field: str) -> None:
    with pytest.raises(ClBenchError, match=field) as e:
        Augmenter.from_params(params)
    assert "\n" not in str(e.value)


def test_config_defaults_roundtrip() -> None:
    assert Augmenter.from_params(None).config == AugmentConfig()
