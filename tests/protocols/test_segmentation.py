"""Segmentation protocol: dilation to output stride 8, heads, augmentation, sliding window, tiny runs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.image.dense_trunk import dilate_to_output_stride, trunk_of
from cl_bench.protocols.dense.seg_heads import DeepLabV3Head, FCNHead, build_segmenter
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.segmentation import SegmentationParams, augment_pair, infer, run_segmentation

TINY = {"iterations": 3, "batch_size": 2, "lr": 0.01, "crop_size": [40, 40], "scale_range": [0.75, 1.25],
        "head_channels": 16}


@pytest.fixture
def scenes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path))
    return components.get("dataset", "scenes-cityscapes")({"n_train": 6, "n_test": 3, "image_size": 48, "seed": 2}, None)


def ctx() -> RunContext:
    return RunContext(torch.device("cpu"), 0, lambda m, s: np.zeros((0, 1)))


def test_resnet_dilated_to_output_stride_8() -> None:
    torch.manual_seed(0)
    enc = components.get("arch", "resnet18")({}, in_channels=3, image_size=(64, 64))
    trunk = trunk_of(enc)
    assert dilate_to_output_stride(trunk, 8) == ["res4", "res5"]
    assert trunk.strides == {"res2": 4, "res3": 8, "res4": 8, "res5": 8}
    # mmseg's d8 ResNet: res4 dilation 2, res5 dilation 4, no stride left in either
    assert {m.dilation for m in enc.layer3.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)} == {(2, 2)}
    assert {m.dilation for m in enc.layer4.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)} == {(4, 4)}
    assert all(m.stride == (1, 1) for m in enc.layer4.modules() if isinstance(m, nn.Conv2d))
    out = trunk(torch.rand(1, 3, 64, 64))["res5"]
    assert out.shape[-2:] == (8, 8)


def test_small_resnet_already_at_stride_8_is_left_alone() -> None:
    enc = components.get("arch", "small-resnet")({"width": 8}, in_channels=3, image_size=(96, 96))
    trunk = trunk_of(enc)
    assert dilate_to_output_stride(trunk, 8) == []
    assert dilate_to_output_stride(trunk, 4) == ["stage3"] and trunk.strides["stage3"] == 4


def test_fcn_head_layout_like_mmseg() -> None:
    head = FCNHead(32, 16, 5, num_convs=2, concat_input=True)
    x = torch.rand(2, 32, 6, 6)
    head.eval()
    # by hand: two conv-BN-ReLU, concat with the input, fuse conv, 1x1 classifier
    y = head.convs[1](head.convs[0](x))
    expect = head.conv_seg(head.conv_cat(torch.cat([x, y], 1)))
    assert torch.allclose(head(x), expect)
    assert head.conv_cat[0].in_channels == 48 and head(x).shape == (2, 5, 6, 6)
    aspp = DeepLabV3Head(32, 5, rates=(2, 4), channels=8).eval()
    assert aspp(x).shape == (2, 5, 6, 6)


def test_segmenter_output_matches_input_size() -> None:
    enc = components.get("arch", "small-resnet")({"width": 8}, in_channels=3, image_size=(48, 48))
    model = build_segmenter(trunk_of(enc), "fcn", 19, 16).eval()
    assert model(torch.rand(1, 3, 48, 40)).shape == (1, 19, 48, 40)


def test_augment_pair_keeps_pixels_and_labels_aligned() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 19, size=(20, 30)).astype(np.uint8)
    image = torch.from_numpy(label.astype(np.float32))[None].repeat(3, 1, 1) / 255.0  # pixel value = label / 255
    p = SegmentationParams(**{**TINY, "crop_size": [24, 24], "scale_range": [1.0, 1.0], "hflip": 0.5})
    for seed in range(6):
        img, lab = augment_pair(image, label, p, np.random.default_rng(seed))
        assert img.shape == (3, 24, 24) and lab.shape == (24, 24)
        valid = lab != 255  # padding (crop taller than the 20-pixel image): label 255 and image 0
        assert torch.equal((img[0][valid] * 255).round().long(), lab[valid])
        assert torch.all(img[:, ~valid] == 0)


def test_slide_inference_averages_windows() -> None:
    class Identity(nn.Module):  # logits = the input's first two channels, so averaging is exact
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :2]

    image = torch.rand(3, 10, 14)
    p = SegmentationParams(iterations=1, test_mode="slide", test_crop=(6, 8), test_stride=(4, 5))
    out = infer(Identity(), image, 2, p)
    assert torch.allclose(out, image[:2], atol=1e-6)


def test_tiny_fcn_run_and_determinism(scenes) -> None:
    torch.manual_seed(0)
    enc = components.get("arch", "small-resnet")({"width": 8}, in_channels=3, image_size=(48, 48))
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    p = SegmentationParams(**TINY)
    a = run_segmentation(enc, scenes, p, ctx())
    b = run_segmentation(enc, scenes, p, ctx())
    assert set(a.metrics) == {"mIoU", "mAcc", "aAcc"} and a.metrics == b.metrics
    assert len(a.extras["per_class_iou"]) == 19 and a.extras["output_stride"] == 8
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())


def test_tiny_deeplab_run_with_frozen_bn(scenes) -> None:
    enc = components.get("arch", "small-resnet")({"width": 8}, in_channels=3, image_size=(48, 48))
    p = SegmentationParams(**{**TINY, "head": "deeplabv3", "aspp_rates": [2, 4], "bn": "frozen", "iterations": 2})
    r = run_segmentation(enc, scenes, p, ctx())
    assert 0.0 <= r.metrics["mIoU"] <= 100.0 and r.extras["head"] == "deeplabv3"


def test_wrong_data_kind_is_a_clear_error() -> None:
    enc = components.get("arch", "small-resnet")({"width": 8}, in_channels=3, image_size=(48, 48))
    with pytest.raises(ClBenchError, match="segmentation dataset"):
        run_segmentation(enc, SimpleNamespace(name="x"), SegmentationParams(**TINY), ctx())
