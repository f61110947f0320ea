"""Detection as detectron2 runs it: the ROIAlignV2 pooler against hand-worked bilinear values and
detectron2's level rule, PreciseBN against the average of per-batch statistics, and a tiny run
with both switched on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign

from cl_bench.models.image.dense_trunk import trunk_of
from cl_bench.protocols.dense.detectors import AlignedMultiScaleRoIAlign, build_detector
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.detection import DetectionParams, detector_config, run_detection
from cl_bench.protocols.dense.precise_bn import update_bn_stats
from tests.protocols.test_detection import TINY, small, voc  # noqa: F401  (fixture)
from tests.protocols.test_detection import cache  # noqa: F401  (fixture)


def ramp(h: int, w: int) -> torch.Tensor:
    """A one-channel map whose value is its x coordinate (bilinear sampling of it is exact)."""
    return torch.arange(w, dtype=torch.float64).expand(h, w)[None, None].clone()


def test_roialignv2_is_half_pixel_shifted_and_torchvision_is_not() -> None:
    # one level at stride 4 (image 64 -> map 16); box x 10..42 in image pixels -> 2.5..10.5 on the map.
    # ROIAlignV2 (aligned): continuous coordinates 2.5 - 0.5 = 2.0 .. 10.0, 4 bins of width 2.0, the
    # mean of a linear map over a bin is its value at the bin centre: 3, 5, 7, 9.
    # torchvision's legacy RoIAlign: 2.5 .. 10.5 -> 3.5, 5.5, 7.5, 9.5.
    feats = {"0": ramp(16, 16)}
    boxes = [torch.tensor([[10.0, 8.0, 42.0, 40.0]], dtype=torch.float64)]
    v2 = AlignedMultiScaleRoIAlign(["0"], output_size=4, sampling_ratio=0)(feats, boxes, [(64, 64)])
    old = MultiScaleRoIAlign(["0"], output_size=4, sampling_ratio=0)(feats, boxes, [(64, 64)])
    np.testing.assert_allclose(v2[0, 0, 0].numpy(), [3.0, 5.0, 7.0, 9.0], atol=1e-9)
    np.testing.assert_allclose(old[0, 0, 0].numpy(), [3.5, 5.5, 7.5, 9.5], atol=1e-9)


def test_roialignv2_levels_follow_detectron2s_rule() -> None:
    # detectron2 assign_boxes_to_levels: floor(4 + log2(sqrt(area) / 224 + 1e-8)), clamped to the levels
    strides = [4, 8, 16, 32]
    size = 512
    feats = {str(i): torch.full((1, 1, size // s, size // s), float(i)) for i, s in enumerate(strides)}
    sides = [20.0, 60.0, 111.0, 113.0, 224.0, 300.0, 447.0, 449.0]
    boxes = [torch.tensor([[10.0, 10.0, 10.0 + s, 10.0 + s] for s in sides])]
    out = AlignedMultiScaleRoIAlign(list(feats), output_size=2, sampling_ratio=0)(feats, boxes, [(size, size)])
    want = [min(5, max(2, math.floor(4 + math.log2(s / 224 + 1e-8)))) - 2 for s in sides]
    assert out[:, 0, 0, 0].tolist() == [float(w) for w in want] and set(want) == {0, 1, 2, 3}


def test_pooler_parameter_builds_the_detectron2_pooler(voc) -> None:  # noqa: F811
    for head in ("c4", "fpn"):
        cfg = detector_config(DetectionParams(head=head, pooler="ROIAlignV2", **TINY), voc)
        model = build_detector(trunk_of(small()), cfg)
        pool = model.roi_heads.box_roi_pool
        assert isinstance(pool, AlignedMultiScaleRoIAlign) and pool.sampling_ratio == 0
        legacy = build_detector(trunk_of(small()), detector_config(DetectionParams(head=head, **TINY), voc))
        assert type(legacy.roi_heads.box_roi_pool) is MultiScaleRoIAlign  # the twins' default is unchanged


def test_precise_bn_equals_the_average_of_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))
    batches = [torch.randn(4, 2, 5, 5) * (1 + i) + i for i in range(6)]
    with torch.no_grad():  # the reference: mean over batches of each BN's batch mean / unbiased variance
        mean1, var1, mean2, var2 = [], [], [], []
        for x in batches:
            h = model[0](x)
            mean1.append(h.mean((0, 2, 3)))
            var1.append(h.var((0, 2, 3), unbiased=True))
            z = model[3](model[2]((h - h.mean((0, 2, 3), keepdim=True))
                                  / torch.sqrt(h.var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5)
                                  * model[1].weight[None, :, None, None] + model[1].bias[None, :, None, None]))
            mean2.append(z.mean((0, 2, 3)))
            var2.append(z.var((0, 2, 3), unbiased=True))
    model.eval()
    n = update_bn_stats(model, iter(batches), len(batches), lambda m, x: m(x))
    assert n == 2 and not model.training and model[1].momentum == 0.1
    torch.testing.assert_close(model[1].running_mean, torch.stack(mean1).mean(0))
    torch.testing.assert_close(model[1].running_var, torch.stack(var1).mean(0))
    torch.testing.assert_close(model[4].running_mean, torch.stack(mean2).mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model[4].running_var, torch.stack(var2).mean(0), atol=1e-5, rtol=1e-5)


def test_tiny_run_with_roialignv2_and_precise_bn(voc) -> None:  # noqa: F811
    params = DetectionParams(head="c4", bn="finetune", pooler="ROIAlignV2", precise_bn_iters=2, **TINY)
    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: np.zeros((0, 1)))
    torch.manual_seed(0)
    r = run_detection(small(), voc, params, ctx)
    assert r.extras["train"]["precise_bn"]["iters"] == 2 and r.extras["train"]["precise_bn"]["layers"] > 0
    assert all(0.0 <= v <= 100.0 for v in r.metrics.values())
    frozen = run_detection(small(), voc, DetectionParams(head="c4", bn="frozen", precise_bn_iters=2, **TINY), ctx)
    assert frozen.extras["train"]["precise_bn"]["layers"] == 0  # FrozenBatchNorm2d has nothing to update
