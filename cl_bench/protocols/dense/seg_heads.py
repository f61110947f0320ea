"""Semantic-segmentation models: a (dilated) encoder trunk + an FCN, DeepLabV3 or Semantic FPN head.

- ``fcn``: mmsegmentation's ``FCNHead`` layout: ``num_convs`` 3x3 conv-BN-ReLU layers of
  ``channels`` on the last stage, the input concatenated back and fused by one more 3x3
  conv-BN-ReLU (``concat_input``), dropout, then a 1x1 classifier.
- ``deeplabv3``: torchvision's ``ASPP`` (1x1 + three atrous 3x3 branches + image pooling,
  256 channels) followed by a 3x3 conv-BN-ReLU and a 1x1 classifier (torchvision's
  ``DeepLabHead`` with configurable rates).
- ``fpn``: Semantic FPN (Kirillov et al., "Panoptic Feature Pyramid Networks", 2019) as mmseg's
  ``FPN`` neck + ``FPNHead`` (DenseCLIP's segmentation configs): the neck's lateral 1x1 convs
  (with bias, no norm) bring every stage to ``fpn_channels``, the top-down pathway adds each
  level's nearest-upsampled coarser level, and a 3x3 conv (with bias) smooths each level
  (Xavier-uniform weights, zero bias, as mmseg's FPN init); the head's scale head of the level at
  stride ``s`` is ``max(1, log2(s / s_0))`` 3x3 conv-BN-ReLU of ``channels``, each but the finest
  level's followed by a 2x bilinear upsampling, so every level arrives at the finest stride
  (1/4); they are summed, then dropout and a 1x1 classifier. It reads all the trunk's stages
  (:func:`head_input`); the others read the last.

The trunk's last stages are dilated to the requested output stride (8: the "-d8" backbones);
logits are upsampled bilinearly to the input size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from cl_bench.models.image.dense_trunk import Trunk


def conv_bn_relu(cin: int, cout: int, k: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FCNHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_classes: int, num_convs: int = 2,
                 concat_input: bool = True, dropout: float = 0.1) -> None:
        super().__init__()
        convs = [conv_bn_relu(in_channels if i == 0 else channels, channels) for i in range(num_convs)]
        self.convs = nn.Sequential(*convs) if convs else nn.Identity()
        self.concat_input = concat_input
        width = channels if num_convs else in_channels
        self.conv_cat = conv_bn_relu(in_channels + width, channels) if concat_input else None
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels if (concat_input or num_convs) else in_channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        if self.conv_cat is not None:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return self.conv_seg(self.dropout(out))


class FPNNeck(nn.Module):
    """mmseg ``FPN`` (``num_outs`` = the number of inputs, no extra levels, no norm/activation)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, feats, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="nearest")
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals, strict=True)]


class SemanticFPNHead(nn.Module):
    """FPN neck + mmseg ``FPNHead`` over every stage (strides ``strides``); logits at the finest stride."""

    reads_all_stages = True

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int, channels: int = 256,
                 fpn_channels: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError(f"{len(in_channels)} input channels for {len(strides)} strides")
        self.neck = FPNNeck(in_channels, fpn_channels)
        self.scale_heads = nn.ModuleList()
        for s in strides:
            layers: list[nn.Module] = []
            for k in range(max(1, int(math.log2(s) - math.log2(strides[0])))):
                layers.append(conv_bn_relu(fpn_channels if k == 0 else channels, channels))
                if s != strides[0]:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        levels = self.neck(feats)
        out = self.scale_heads[0](levels[0])
        for head, x in zip(self.scale_heads[1:], levels[1:], strict=True):
            out = out + F.interpolate(head(x), size=out.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv_seg(self.dropout(out))


def head_input(head: nn.Module, maps: Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """What ``head`` reads of the trunk's stage maps: all of them (Semantic FPN) or the last."""
    return list(maps) if getattr(head, "reads_all_stages", False) else maps[-1]


class DeepLabV3Head(nn.Sequential):
    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = (12, 24, 36),
                 channels: int = 256) -> None:
        super().__init__(ASPP(in_channels, list(rates), channels), conv_bn_relu(channels, channels),
                         nn.Conv2d(channels, num_classes, 1))


class SegmentationModel(nn.Module):
    """``trunk -> head on the last stage -> bilinear upsampling to the input size``."""

    def __init__(self, trunk: Trunk, head: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.last = trunk.names[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = list(self.trunk(images).values())
        logits = self.head(head_input(self.head, maps))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The segmenter's backbone parameters (optimizer groups): its own ``backbone_parameters()`` when it
    declares one (a language-guided segmenter: the trunk and the image tower's dense head), else its trunk's."""
    own = getattr(model, "backbone_parameters", None)
    return list(own()) if callable(own) else list(model.trunk.parameters())


class AuxiliaryLogits(NamedTuple):
    """What a segmenter with an auxiliary loss returns in training: the main logits (input size)
    and auxiliary logits [B, C, h, w] whose cross-entropy, upsampled to the label, adds with ``weight``
    (DenseCLIP's pixel-text score maps / tau, weight 0.4)."""

    logits: torch.Tensor
    aux_logits: torch.Tensor
    weight: float


HeadName = Literal["fcn", "deeplabv3", "fpn"]


def build_head(head: HeadName, in_channels: int | Sequence[int], num_classes: int, channels: int,
               fcn_num_convs: int = 2, concat_input: bool = True, dropout: float = 0.1,
               aspp_rates: Sequence[int] = (12, 24, 36), strides: Sequence[int] = (),
               fpn_channels: int = 256) -> nn.Module:
    """The head over ``in_channels``: the stages' channels (a list; single-stage heads read the last)
    or the last stage's; ``fpn`` also needs the stages' ``strides``."""
    stages = [in_channels] if isinstance(in_channels, int) else list(in_channels)
    if head == "fpn":
        return SemanticFPNHead(stages, strides, num_classes, channels, fpn_channels, dropout)
    if head == "fcn":
        return FCNHead(stages[-1], channels, num_classes, fcn_num_convs, concat_input, dropout)
    return DeepLabV3Head(stages[-1], num_classes, aspp_rates, channels)


def build_segmenter(trunk: Trunk, head: HeadName, num_classes: int, channels: int,
                    fcn_num_convs: int = 2, concat_input: bool = True, dropout: float = 0.1,
                    aspp_rates: Sequence[int] = (12, 24, 36), fpn_channels: int = 256) -> SegmentationModel:
    cins = [trunk.channels[n] for n in trunk.names]
    return SegmentationModel(trunk, build_head(head, cins, num_classes, channels, fcn_num_convs, concat_input,
                                               dropout, aspp_rates, [trunk.strides[n] for n in trunk.names],
                                               fpn_channels))
