"""``scatsimclr-net``: the ScatSimCLR network of the authors' release, module for module.

vkinakh/scatsimclr ``src/models/scatnet_simclr.py`` (``ScatSimCLR(J, L, input_size, res_blocks,
out_dim)``): kymatio's order-2 ``Scattering2D`` on each input channel, ``_scatnet_bn`` (BatchNorm
over the C·K coefficient maps), the adapter ``_adapter_network`` = 3x3 conv (no bias) to 256
channels (32 for 8 blocks), BatchNorm, ReLU, the residual stages of ``res_blocks`` (8, 12, 16, 30
or 45 basic blocks, as their table), AdaptiveAvgPool2d(4); the representation ``h`` is that 4x4
map flattened (128 x 16 = 2048 values), which their linear evaluation uses. The projection head
(``l1``, ``l2``) is not part of the encoder, and the scattering filters (kymatio's buffers
``_scatnet.tensor<n>``) are recomputed by :class:`cl_bench.models.image.scattering.Scattering2D`, which
tests check against kymatio. The residual blocks are torchvision's ``BasicBlock`` (same keys and
computation as theirs: conv1/bn1/conv2/bn2 and a 1x1 conv + BN ``downsample`` when the width changes).

Params: ``J``, ``L``, ``res_blocks``, ``mean``/``std`` (their per-dataset input normalisation:
ImageNet statistics for STL-10, (0.491, 0.482, 0.447)/(0.247, 0.243, 0.261) for CIFAR).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torchvision.models.resnet import BasicBlock

from cl_bench.components import register
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.models.image.scattering import Scattering2D, coefficients_per_channel
from cl_bench.models.image.small_resnet import InputNormalization, per_channel
from cl_bench.specs import validate_params

# (planes, blocks) of each residual stage, per res_blocks (the authors' _create_adapter_network)
STAGES: dict[int, list[tuple[int, int]]] = {
    8: [(64, 4), (128, 4)],
    12: [(128, 4), (64, 4), (128, 4)],
    16: [(128, 6), (64, 4), (128, 6)],
    30: [(128, 30)],
    45: [(128, 15), (64, 15), (128, 15)],
}
POOL = 4


class ScatSimCLRNetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    J: int = Field(default=2, ge=1, le=6)
    L: int = Field(default=16, ge=1, le=16)
    res_blocks: Literal[8, 12, 16, 30, 45] = 30
    mean: float | list[float] = [0.485, 0.456, 0.406]
    std: float | list[float] = [0.229, 0.224, 0.225]


class ScatSimCLRNet(ImageEncoder):
    """Scattering -> ``_scatnet_bn`` -> ``_adapter_network``; ``forward`` is the flattened 4x4 pool."""

    arch_name = "scatsimclr-net"

    def __init__(self, in_channels: int, image_size: tuple[int, int], p: ScatSimCLRNetParams) -> None:
        super().__init__()
        self.normalize = InputNormalization(per_channel(p.mean, in_channels, "mean", "arch scatsimclr-net"),
                                            per_channel(p.std, in_channels, "std", "arch scatsimclr-net"))
        self._scatnet = Scattering2D(p.J, p.L, image_size, max_order=2)
        channels = in_channels * coefficients_per_channel(p.J, p.L, 2)
        self._scatnet_bn = nn.BatchNorm2d(channels)
        width = 32 if p.res_blocks == 8 else 256
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(inplace=True)]
        for planes, blocks in STAGES[p.res_blocks]:
            downsample = None
            if width != planes:
                downsample = nn.Sequential(nn.Conv2d(width, planes, 1, 1, bias=False), nn.BatchNorm2d(planes))
            layers.append(nn.Sequential(BasicBlock(width, planes, 1, downsample),
                                        *[BasicBlock(planes, planes) for _ in range(blocks - 1)]))
            width = planes
        layers.append(nn.AdaptiveAvgPool2d(POOL))
        self._adapter_network = nn.Sequential(*layers)
        self.embed_dim = width * POOL * POOL

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self._scatnet_bn(self._scatnet(self.normalize(images)))
        return torch.flatten(self._adapter_network(s), 1)


@register("arch", "scatsimclr-net")
def build(params: dict, in_channels: int, image_size: tuple[int, int]) -> ScatSimCLRNet:
    """Build the authors' ScatSimCLR network (``J``, ``L``, ``res_blocks``, input normalisation)."""
    p: ScatSimCLRNetParams = validate_params(ScatSimCLRNetParams, params, where="arch scatsimclr-net")
    return ScatSimCLRNet(in_channels, tuple(image_size), p)
