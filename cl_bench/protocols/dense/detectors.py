"""torchvision Faster / Mask R-CNN built around a method's encoder (FPN or C4).

- ``fpn``: the trunk's stages (ResNet: res2..res5) feed torchvision's
  ``FeaturePyramidNetwork`` (+ a max-pooled extra level, as detectron2's ``LastLevelMaxPool``);
  RPN with one anchor size per level; 7x7 ``MultiScaleRoIAlign`` + two-FC box head (1024).
  With masks: 14x14 RoIAlign + torchvision's four-conv mask head (Mask R-CNN).
- ``c4``: detectron2's ``Res5ROIHeads`` setting used by MoCo and PixPro for VOC: the RPN and
  the 14x14 RoIAlign read the next-to-last stage (res4, stride 16); the LAST stage (res5)
  is the ROI head (its first block strides to 7x7), then global average pooling and the box
  predictor. ``extra_norm`` adds a BatchNorm after res5 (MoCo's ``Res5ROIHeadsExtraNorm``).
  With masks the same res5 module (shared weights) runs on the mask RoIs, followed by a
  2x deconvolution + 1x1 mask predictor (detectron2's C4 mask head).

RoI pooling: ``pooler: torchvision`` is torchvision's ``MultiScaleRoIAlign`` (``aligned=False``;
sampling ratio 2 in the FPN heads, 0 in C4); ``pooler: ROIAlignV2`` is detectron2's default
``POOLER_TYPE`` in every config MoCo and PixPro build on: RoIAlign with ``aligned=True`` (box
corners shifted by half a pixel, no minimum RoI size of 1) and ``POOLER_SAMPLING_RATIO: 0``
(adaptive), with the same level assignment (canonical size 224 at level 4).

Input normalisation stays inside the encoder: torchvision's transform gets mean 0 / std 1,
so it only resizes and batches. Class index ``c`` of the dataset is detector label ``c + 1``
(0 is background).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, roi_align
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

from cl_bench.errors import ClBenchError
from cl_bench.models.image.dense_trunk import Trunk


@dataclass
class DetectorConfig:
    """Everything that shapes the detector (the protocol fills it from the task spec)."""

    head: Literal["fpn", "c4"]
    num_classes: int  # dataset classes, background excluded
    masks: bool = False
    fpn_channels: int = 256
    box_head_dim: int = 1024  # FPN two-FC box head width
    mask_head_dim: int = 256
    fpn_levels: int = 4  # how many of the last trunk stages feed the FPN
    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512)
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    extra_norm: bool = False
    c4_pool_size: int = 14  # RoIAlign output of the C4 head (res5 then halves it)
    pooler: Literal["torchvision", "ROIAlignV2"] = "torchvision"
    min_size: Sequence[int] = (800,)
    max_size: int = 1333
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100


class AlignedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """detectron2's ROIAlignV2 pooler: torchvision's level assignment and scales, each level pooled
    by ``roi_align(..., aligned=True)``."""

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        feats = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(feats, image_shapes, self.canonical_scale, self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        size, ratio = self.output_size, self.sampling_ratio
        if len(feats) == 1:
            return roi_align(feats[0], rois, size, self.scales[0], ratio, aligned=True)
        levels = self.map_levels(boxes)
        out = feats[0].new_zeros((len(rois), feats[0].shape[1], *size))
        for level, (feat, scale) in enumerate(zip(feats, self.scales)):
            idx = torch.where(levels == level)[0]
            out[idx] = roi_align(feat, rois[idx], size, scale, ratio, aligned=True).to(out.dtype)
        return out


def roi_pooler(cfg: DetectorConfig, names: list[str], size: int, torchvision_ratio: int) -> MultiScaleRoIAlign:
    """The RoI pooler ``cfg.pooler`` asks for (see the module doc)."""
    if cfg.pooler == "ROIAlignV2":
        return AlignedMultiScaleRoIAlign(names, output_size=size, sampling_ratio=0)
    return MultiScaleRoIAlign(names, output_size=size, sampling_ratio=torchvision_ratio)


class FPNBackbone(nn.Module):
    """Trunk stages -> FPN levels '0'..'L-1' plus 'pool' (stride x2 of the last)."""

    def __init__(self, trunk: Trunk, in_names: list[str], out_channels: int,
                 fpn: FeaturePyramidNetwork | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        self.in_names = in_names
        self.fpn = fpn if fpn is not None else FeaturePyramidNetwork(
            [trunk.channels[n] for n in in_names], out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.trunk(images, upto=self.in_names[-1])
        return self.fpn(OrderedDict((str(i), maps[n]) for i, n in enumerate(self.in_names)))


class C4Backbone(nn.Module):
    """Trunk up to the next-to-last stage; one feature map '0'."""

    def __init__(self, trunk: Trunk, last: str) -> None:
        super().__init__()
        self.trunk = trunk
        self.last = last
        self.out_channels = trunk.channels[last]

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict([("0", self.trunk(images, upto=self.last)[self.last])])


class Res5Head(nn.Module):
    """The last trunk stage as ROI head: [R, C4, 14, 14] -> [R, C5] (pooled) or [R, C5, 7, 7]."""

    def __init__(self, stage: nn.Module, channels: int, pool: bool, norm: nn.Module | None) -> None:
        super().__init__()
        self.stage = stage
        self.norm = norm if norm is not None else nn.Identity()
        self.pool = pool
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.stage(x))
        return torch.flatten(x.mean(dim=(2, 3)), 1) if self.pool else x


class C4MaskPredictor(nn.Sequential):
    """detectron2's C4 mask head on res5 maps: 2x deconv + ReLU, then one 1x1 conv per class."""

    def __init__(self, in_channels: int, dim: int, num_classes: int) -> None:
        super().__init__(OrderedDict([
            ("conv5_mask", nn.ConvTranspose2d(in_channels, dim, 2, 2)),
            ("relu", nn.ReLU(inplace=True)),
            ("mask_fcn_logits", nn.Conv2d(dim, num_classes, 1)),
        ]))
        for name, p in self.named_parameters():
            if "weight" in name:
                nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.zeros_(p)


def _common_kwargs(cfg: DetectorConfig) -> dict:
    names = ("max_size", "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_train",
             "rpn_post_nms_top_n_test", "rpn_batch_size_per_image", "box_batch_size_per_image", "box_score_thresh",
             "box_nms_thresh", "box_detections_per_img")
    return {"min_size": tuple(cfg.min_size), "image_mean": [0.0, 0.0, 0.0], "image_std": [1.0, 1.0, 1.0],
            **{n: getattr(cfg, n) for n in names}}


def pretrained_fpn(encoder: nn.Module, trunk: Trunk, cfg: DetectorConfig) -> FeaturePyramidNetwork | None:
    """The FPN a ``with-fpn`` encoder was pretrained with, if the task's FPN has its shape; else None.

    A pretrained FPN of another shape (levels, channels) than the task asks for -> ClBenchError.
    """
    fpn = getattr(encoder, "fpn", None)
    if cfg.head != "fpn" or fpn is None:
        return None
    want = (list(trunk.names[-cfg.fpn_levels:]), cfg.fpn_channels)
    have = (list(encoder.in_names), encoder.fpn_channels)
    if want != have:
        raise ClBenchError(
            f"the method pretrained an FPN over stages {have[0]} with {have[1]} channels but the task's "
            f"detector has one over {want[0]} with {want[1]}: match fpn_levels / fpn_channels to the arch"
        )
    return fpn


def build_detector(trunk: Trunk, cfg: DetectorConfig, fpn: FeaturePyramidNetwork | None = None) -> FasterRCNN:
    """A torchvision ``FasterRCNN`` (``MaskRCNN`` with masks) whose backbone is ``trunk``.

    ``fpn``: a pretrained FPN to use instead of a fresh one (see :func:`pretrained_fpn`).
    """
    names = trunk.names
    n_out = cfg.num_classes + 1
    ratios = tuple(float(r) for r in cfg.aspect_ratios)
    if cfg.head == "fpn":
        if not 1 <= cfg.fpn_levels <= len(names):
            raise ClBenchError(f"fpn_levels must be 1..{len(names)} for this encoder, got {cfg.fpn_levels}")
        in_names = names[-cfg.fpn_levels:]
        levels = [str(i) for i in range(len(in_names))]
        if len(cfg.anchor_sizes) != len(levels) + 1:
            raise ClBenchError(
                f"anchor_sizes needs one size per FPN level ({len(levels) + 1} with the pooled level), "
                f"got {list(cfg.anchor_sizes)}"
            )
        backbone: nn.Module = FPNBackbone(trunk, in_names, cfg.fpn_channels, fpn)
        anchors = AnchorGenerator(tuple((int(s),) for s in cfg.anchor_sizes), (ratios,) * len(cfg.anchor_sizes))
        box_pool = roi_pooler(cfg, levels, 7, 2)
        box_head = TwoMLPHead(cfg.fpn_channels * 7 * 7, cfg.box_head_dim)
        kw = dict(rpn_anchor_generator=anchors, box_roi_pool=box_pool, box_head=box_head,
                  box_predictor=FastRCNNPredictor(cfg.box_head_dim, n_out), **_common_kwargs(cfg))
        if cfg.masks:
            return MaskRCNN(backbone, num_classes=None,
                            mask_roi_pool=roi_pooler(cfg, levels, 14, 2),
                            mask_head=MaskRCNNHeads(cfg.fpn_channels, [cfg.mask_head_dim] * 4, 1),
                            mask_predictor=MaskRCNNPredictor(cfg.mask_head_dim, cfg.mask_head_dim, n_out), **kw)
        return FasterRCNN(backbone, num_classes=None, **kw)
    if cfg.head != "c4":
        raise ClBenchError(f"detector head must be fpn or c4, got {cfg.head!r}")
    if len(names) < 2:
        raise ClBenchError("a C4 detector needs an encoder with at least two stages")
    last, res5 = names[-2], names[-1]
    backbone = C4Backbone(trunk, last)
    c5 = trunk.channels[res5]
    norm = nn.BatchNorm2d(c5) if cfg.extra_norm else None
    anchors = AnchorGenerator((tuple(int(s) for s in cfg.anchor_sizes),), (ratios,))
    rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0])
    kw = dict(rpn_anchor_generator=anchors, rpn_head=rpn_head,
              box_roi_pool=roi_pooler(cfg, ["0"], cfg.c4_pool_size, 0),
              box_head=Res5Head(trunk.stages[res5], c5, pool=True, norm=norm),
              box_predictor=FastRCNNPredictor(c5, n_out), **_common_kwargs(cfg))
    if cfg.masks:
        return MaskRCNN(backbone, num_classes=None,
                        mask_roi_pool=roi_pooler(cfg, ["0"], cfg.c4_pool_size, 0),
                        mask_head=Res5Head(trunk.stages[res5], c5, pool=False, norm=norm),
                        mask_predictor=C4MaskPredictor(c5, cfg.mask_head_dim, n_out), **kw)
    return FasterRCNN(backbone, num_classes=None, **kw)
