"""``with-fpn``: a residual encoder plus an FPN over its last stages, pretrained together.

PixPro's "pretrained FPN" setting (arXiv 2011.10043, head-network pre-training): the pixel
pretext task runs on every FPN output level instead of the backbone's last map only, and the
FPN weights are then loaded into the detector's FPN instead of starting from a random init.
The FPN is torchvision's ``FeaturePyramidNetwork`` with the ``LastLevelMaxPool`` extra level,
exactly the module :func:`cl_bench.protocols.dense.detectors.build_detector` builds for ``head: fpn``, so
the weights map one to one. The embedding (linear probe, kNN) is the base encoder's; the FPN
only matters to the FPN detector.

    arch: {name: with-fpn, params: {base: {name: small-resnet, params: {width: 32}}, levels: 3, channels: 64}}
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from cl_bench import components
from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.specs import ArchRef, validate_params


class PyramidParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: ArchRef
    levels: int = Field(default=3, ge=1)  # how many of the last stages feed the FPN (the task's fpn_levels)
    channels: int = Field(default=256, ge=1)  # the task's fpn_channels


class PyramidEncoder(ImageEncoder):
    """``body`` (a residual encoder) + ``fpn``; ``pyramid_of(feature_maps)`` -> the FPN levels."""

    def __init__(self, body: nn.Module, levels: int, channels: int) -> None:
        super().__init__()
        from cl_bench.models.image.dense_trunk import trunk_of

        trunk = trunk_of(body)
        if not 1 <= levels <= len(trunk.names):
            raise ClBenchError(f"arch with-fpn: levels must be 1..{len(trunk.names)} for this encoder, got {levels}")
        self.body = body
        self.in_names = trunk.names[-levels:]
        self.in_channels = [trunk.channels[n] for n in self.in_names]
        self.fpn = FeaturePyramidNetwork(self.in_channels, channels, extra_blocks=LastLevelMaxPool())
        self.fpn_channels = channels
        self.embed_dim = body.embed_dim
        self.arch_name = f"{getattr(body, 'arch_name', type(body).__name__)}+fpn"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def feature_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.body.feature_maps(images)

    def pyramid_of(self, maps: dict[str, torch.Tensor], pooled: bool = False) -> OrderedDict[str, torch.Tensor]:
        """FPN outputs '0'..'L-1' (fine to coarse) from the body's feature maps; 'pool' too when asked."""
        out = self.fpn(OrderedDict((str(i), maps[n]) for i, n in enumerate(self.in_names)))
        if not pooled:
            out.pop("pool", None)
        return out


@register("arch", "with-fpn")
def build(params: dict, in_channels: int, image_size: tuple[int, int]) -> PyramidEncoder:
    p: PyramidParams = validate_params(PyramidParams, params, where="arch with-fpn")
    if p.base.name == "with-fpn":
        raise ClBenchError("arch with-fpn: base must be a residual encoder (small-resnet, resnet18, resnet50)")
    body = components.get("arch", p.base.name)(p.base.params, in_channels=in_channels, image_size=image_size)
    return PyramidEncoder(body, p.levels, p.channels)
