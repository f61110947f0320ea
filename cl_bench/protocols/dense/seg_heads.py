"""Semantic-segmentation models: a (dilated) encoder trunk + an FCN or DeepLabV3 head.

- ``fcn``: mmsegmentation's ``FCNHead`` layout: ``num_convs`` 3x3 conv-BN-ReLU layers of
  ``channels`` on the last stage, the input concatenated back and fused by one more 3x3
  conv-BN-ReLU (``concat_input``), dropout, then a 1x1 classifier.
- ``deeplabv3``: torchvision's ``ASPP`` (1x1 + three atrous 3x3 branches + image pooling,
  256 channels) followed by a 3x3 conv-BN-ReLU and a 1x1 classifier (torchvision's
  ``DeepLabHead`` with configurable rates).

The trunk's last stages are dilated to the requested output stride (8: the "-d8" backbones);
logits are upsampled bilinearly to the input size.
"""

from __future__ import annotations

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
        x = self.trunk(images)[self.last]
        logits = self.head(x)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


class AuxiliaryLogits(NamedTuple):
    """What a segmenter with an auxiliary loss returns in training: the main logits (input size)
    and auxiliary logits [B, C, h, w] whose cross-entropy, upsampled to the label, adds with ``weight``
    (DenseCLIP's pixel-text score maps / tau, weight 0.4)."""

    logits: torch.Tensor
    aux_logits: torch.Tensor
    weight: float


def build_head(head: Literal["fcn", "deeplabv3"], in_channels: int, num_classes: int, channels: int,
               fcn_num_convs: int = 2, concat_input: bool = True, dropout: float = 0.1,
               aspp_rates: Sequence[int] = (12, 24, 36)) -> nn.Module:
    if head == "fcn":
        return FCNHead(in_channels, channels, num_classes, fcn_num_convs, concat_input, dropout)
    return DeepLabV3Head(in_channels, num_classes, aspp_rates, channels)


def build_segmenter(trunk: Trunk, head: Literal["fcn", "deeplabv3"], num_classes: int, channels: int,
                    fcn_num_convs: int = 2, concat_input: bool = True, dropout: float = 0.1,
                    aspp_rates: Sequence[int] = (12, 24, 36)) -> SegmentationModel:
    cin = trunk.channels[trunk.names[-1]]
    return SegmentationModel(trunk, build_head(head, cin, num_classes, channels, fcn_num_convs, concat_input,
                                               dropout, aspp_rates))
