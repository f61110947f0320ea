"""The Semantic FPN head (mmseg FPN neck + FPNHead, DenseCLIP's segmentation head) and the AdamW
parameter groups / poly schedule of DenseCLIP's config, against mmseg's layout and hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cl_bench.protocols.dense.schedule import adamw, poly_lr
from cl_bench.protocols.dense.seg_heads import FPNNeck, SemanticFPNHead, build_head


def test_scale_heads_follow_mmseg_fpnhead() -> None:
    head = SemanticFPNHead([8, 16, 32, 64], [4, 8, 16, 32], num_classes=5, channels=12, fpn_channels=6)
    convs = [sum(isinstance(m, nn.Conv2d) for m in h.modules()) for h in head.scale_heads]
    ups = [sum(isinstance(m, nn.Upsample) for m in h.modules()) for h in head.scale_heads]
    assert convs == [1, 1, 2, 3] and ups == [0, 1, 2, 3]  # max(1, log2(s / 4)) convs; 2x up but at 1/4
    assert [c.in_channels for c in head.neck.lateral_convs] == [8, 16, 32, 64]
    assert all(c.out_channels == 6 and c.bias is not None for c in head.neck.lateral_convs)
    feats = [torch.randn(2, c, 32 // s * 4, 32 // s * 4) for c, s in zip([8, 16, 32, 64], [4, 8, 16, 32])]
    assert head(feats).shape == (2, 5, 32, 32)  # at the finest level (1/4 of a 128 px input)
    assert build_head("fpn", [8, 16, 32, 64], 5, 12, strides=[4, 8, 16, 32], fpn_channels=6).conv_seg.out_channels == 5


def test_fpn_top_down_hand_worked() -> None:
    # identity laterals and smoothing convs: level i = its input + the nearest-upsampled coarser sum
    neck = FPNNeck([1, 1], 1)
    with torch.no_grad():
        for conv in neck.lateral_convs:
            conv.weight.fill_(1.0)
            conv.bias.zero_()
        for conv in neck.fpn_convs:
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1.0
            conv.bias.zero_()
    fine = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    coarse = torch.tensor([[[[10.0]]]])
    out = neck([fine, coarse])
    assert torch.equal(out[1], coarse)
    assert torch.equal(out[0], torch.tensor([[[[11.0, 12.0], [13.0, 14.0]]]]))


def test_fpn_one_training_step() -> None:
    torch.manual_seed(0)
    head = SemanticFPNHead([4, 8, 8, 16], [4, 8, 16, 32], num_classes=3, channels=8, fpn_channels=8)
    feats = [torch.randn(2, c, 16 // (s // 4), 16 // (s // 4)) for c, s in zip([4, 8, 8, 16], [4, 8, 16, 32])]
    before = {k: v.clone() for k, v in head.state_dict().items()}
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(head(feats), torch.randint(0, 3, (2, 16, 16)))
    loss.backward()
    opt.step()
    changed = [k for k, v in head.state_dict().items() if not torch.equal(v, before[k]) and "running" not in k
               and "num_batches" not in k]
    assert any(k.startswith("neck.lateral_convs.3") for k in changed) and any(k.startswith("scale_heads.3") for k in changed)


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
        self.decoder_norm = nn.LayerNorm(2)  # a non-backbone "norm" parameter: no decay
        self.head = nn.Linear(2, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)


def test_adamw_groups_as_mmcv_custom_keys() -> None:
    toy = Toy()
    opt = adamw(toy, 1e-4, 1e-4, {id(p) for p in toy.trunk.parameters()}, 0.1)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    for p in toy.trunk.parameters():  # backbone: lr x 0.1, decay kept (its norm too: "backbone" wins in mmcv)
        assert math.isclose(by_param[id(p)]["base_lr"], 1e-5) and by_param[id(p)]["weight_decay"] == 1e-4
    for p in toy.decoder_norm.parameters():
        assert by_param[id(p)]["base_lr"] == 1e-4 and by_param[id(p)]["weight_decay"] == 0.0
    for p in toy.head.parameters():
        assert by_param[id(p)]["base_lr"] == 1e-4 and by_param[id(p)]["weight_decay"] == 1e-4
    assert not any(id(p) in by_param for p in toy.frozen.parameters())
    assert isinstance(opt, torch.optim.AdamW)


def test_poly_with_warmup_ratio_hand_worked() -> None:
    # mmcv: regular = (1e-4 - 1e-6) * (1 - it / 100) ** 0.9 + 1e-6; warmup x (r + (1 - r) * it / 10)
    assert poly_lr(0, 100, 1e-4, 0.9, 1e-6, 10, 1e-6) == pytest.approx(1e-4 * 1e-6, rel=1e-9)
    regular = (1e-4 - 1e-6) * (1 - 5 / 100) ** 0.9 + 1e-6
    assert poly_lr(5, 100, 1e-4, 0.9, 1e-6, 10, 1e-6) == pytest.approx(regular * (1e-6 + (1 - 1e-6) * 0.5))
    assert poly_lr(50, 100, 1e-4, 0.9, 1e-6, 10, 1e-6) == pytest.approx((1e-4 - 1e-6) * 0.5 ** 0.9 + 1e-6)
    assert poly_lr(5, 100, 0.01, 0.9, 1e-4, 10) == pytest.approx(((0.01 - 1e-4) * 0.95 ** 0.9 + 1e-4) * (0.001 * 0.5 + 0.5))
