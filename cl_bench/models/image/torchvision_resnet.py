"""``resnet18`` / ``resnet50``: torchvision ResNets (no classifier) as image encoders.

The backbone modules keep torchvision's names (``conv1``, ``bn1``, ``layer1`` ...
``layer4``), so the encoder's state-dict keys are exactly those of a torchvision ResNet
without ``fc`` and released checkpoints map onto it after prefix stripping. The input
normalisation is a pair of non-persistent buffers, outside the state dict.

``stem: cifar`` swaps the 7x7/2 conv + max-pool for a 3x3/1 conv (the CIFAR variant
used by solo-learn and most small-image SSL code); its ``conv1`` is then [64, 3, 3, 3].

``blocks`` (blocks per stage; default the architecture's, ResNet-50: [3, 4, 6, 3]) and ``width``
(the stem's channels and the first stage's planes, doubled per stage; default 64) build a reduced
network of the same layout: every key name of the full one, smaller tensors (what CPU rehearsals of
the dense tasks use: ``--arch-param blocks=[1,1,1,1] --arch-param width=8``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Literal

import torch
import torchvision
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.models.image.small_resnet import InputNormalization, init_resnet, per_channel
from cl_bench.specs import validate_params

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class TorchvisionResNetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mean: float | list[float] = IMAGENET_MEAN
    std: float | list[float] = IMAGENET_STD
    zero_init_residual: bool = False
    stem: Literal["imagenet", "cifar"] = "imagenet"
    blocks: list[Annotated[int, Field(ge=1, le=64)]] | None = Field(default=None, min_length=4, max_length=4)
    width: int = Field(default=64, ge=1, le=1024)


class TorchvisionResNet(ImageEncoder):
    """A torchvision ResNet trunk; ``embed`` is the pooled ``layer4`` output.

    One-channel images are repeated to three channels before normalisation.
    ``feature_maps`` returns ``res2`` ... ``res5`` (the outputs of ``layer1`` ... ``layer4``).
    """

    def __init__(
        self,
        arch_name: str,
        factory: Callable[..., torchvision.models.ResNet],
        in_channels: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        zero_init_residual: bool = False,
        stem: str = "imagenet",
        blocks: Sequence[int] | None = None,
        width: int = 64,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ClBenchError(
                f"arch {arch_name} takes 1- or 3-channel images, the data has {in_channels}; "
                "use small-resnet or raw-pixels for other channel counts"
            )
        self.arch_name = arch_name
        self.in_channels = in_channels
        self.normalize = InputNormalization(mean, std)
        net = factory(weights=None, zero_init_residual=zero_init_residual)
        if blocks is not None or width != 64:
            net = reduced_resnet(net, blocks or [len(getattr(net, f"layer{i}")) for i in range(1, 5)], width,
                                 zero_init_residual)
        if stem == "cifar":
            net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
            net.maxpool = nn.Identity()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.embed_dim = net.fc.in_features

    def _stem(self, images: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            images = images.expand(-1, 3, -1, -1)
        x = self.normalize(images)
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def feature_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self._stem(images)
        maps = {}
        for i, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            x = layer(x)
            maps[f"res{i + 2}"] = x
        return maps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self._stem(images)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(x.mean(dim=(2, 3)), 1)


def reduced_resnet(net: torchvision.models.ResNet, blocks: Sequence[int], width: int,
                   zero_init_residual: bool) -> torchvision.models.ResNet:
    """``net``'s layout with ``blocks`` per stage and ``width`` base channels, built by torchvision's
    own ``_make_layer`` and initialised as torchvision initialises a ResNet."""
    block = type(net.layer1[0])
    net.inplanes, net.dilation = width, 1
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    for i, n in enumerate(blocks):
        setattr(net, f"layer{i + 1}", net._make_layer(block, width * 2**i, n, stride=1 if i == 0 else 2))
    net.fc = nn.Linear(width * 8 * block.expansion, 1000)
    init_resnet(net, block, zero_init_residual)
    return net


def _builder(
    name: str, factory: Callable[..., torchvision.models.ResNet]
) -> Callable[..., TorchvisionResNet]:
    def build(params: dict, in_channels: int, image_size: tuple[int, int]) -> TorchvisionResNet:
        where = f"arch {name}"
        p: TorchvisionResNetParams = validate_params(TorchvisionResNetParams, params, where=where)
        return TorchvisionResNet(
            name,
            factory,
            in_channels,
            mean=per_channel(p.mean, 3, "mean", where),
            std=per_channel(p.std, 3, "std", where),
            zero_init_residual=p.zero_init_residual,
            stem=p.stem,
            blocks=p.blocks,
            width=p.width,
        )

    build.__doc__ = f"Build ``{name}`` (torchvision, no fc) from its YAML params."
    return build


build_resnet18 = register("arch", "resnet18")(_builder("resnet18", torchvision.models.resnet18))
build_resnet50 = register("arch", "resnet50")(_builder("resnet50", torchvision.models.resnet50))
