"""``small-resnet``: a small residual CNN for 8x8 to 32x32 images (grayscale or RGB).

Stem (3x3 conv + BN + ReLU), then stages of basic residual blocks (two 3x3 convs, BN,
identity or 1x1-projection shortcut). Stage ``i`` has ``width * 2**i`` channels; the
first stage keeps the resolution, every later one halves it. The embedding is the
global average of the last stage, so ``embed_dim = width * 2**(len(blocks) - 1)``.

The stem strides by 2 on inputs of 32 px and more (``stem_stride: auto``): at 32x32 a
stride-1 stem makes the net about 4x slower for little gain on the small benchmarks.
This module also holds the input normalisation the other image encoders share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.params import Strict


def init_resnet(net: nn.Module, block: type[nn.Module], zero_init_residual: bool) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan out) convolutions, BN weight 1 and
    bias 0, and with ``zero_init_residual`` the last BN of every residual ``block`` zeroed."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in net.modules():
            if isinstance(m, block):
                nn.init.zeros_(m.bn3.weight if hasattr(m, "bn3") else m.bn2.weight)


class InputNormalization(nn.Module):
    """``(x - mean) / std`` per channel; mean/std are non-persistent buffers.

    They are not in the state dict (so released checkpoints map onto the backbone
    unchanged), but ``model_fingerprint`` still hashes them.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def per_channel(value: float | list[float], channels: int, name: str, where: str) -> list[float]:
    """Broadcast a scalar or a 1-element list to ``channels`` values; other lengths are errors."""
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ClBenchError(
            f"{where}: '{name}' has {len(values)} values but the input has {channels} channels; "
            f"give one value or {channels}"
        )
    if name == "std" and any(v <= 0 for v in values):
        raise ClBenchError(f"{where}: every 'std' value must be > 0, got {values}")
    return values


class SmallResNetParams(Strict):

    width: int = Field(default=32, ge=1, le=1024)
    blocks: list[int] = Field(default_factory=lambda: [1, 1, 1], min_length=1, max_length=6)
    stem_stride: Literal["auto", 1, 2] = "auto"
    zero_init_residual: bool = False
    mean: float | list[float] = 0.5
    std: float | list[float] = 0.25


def stage_maps(net: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``stem``, ``stage1`` ... ``stageK`` maps of a net with ``normalize``, ``stem`` and ``stages``."""
    x = net.stem(net.normalize(images))
    maps = {"stem": x}
    for i, stage in enumerate(net.stages):
        x = stage(x)
        maps[f"stage{i + 1}"] = x
    return maps


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual shortcut (1x1 conv-BN when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(ImageEncoder):
    """Small ResNet encoder; ``feature_maps`` gives ``stem``, ``stage1`` ... ``stageK``."""

    arch_name = "small-resnet"

    def __init__(
        self,
        in_channels: int,
        width: int = 32,
        blocks: Sequence[int] = (1, 1, 1),
        stem_stride: int = 1,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.25,),
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.normalize = InputNormalization(mean, std)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        ch = width
        for i, n in enumerate(blocks):
            out = width * 2**i
            layers = [BasicBlock(ch, out, 1 if i == 0 else 2)]
            layers += [BasicBlock(out, out, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            ch = out
        self.stages = nn.ModuleList(stages)
        self.embed_dim = ch
        init_resnet(self, BasicBlock, zero_init_residual)

    def feature_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return stage_maps(self, images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.normalize(images))
        for stage in self.stages:
            x = stage(x)
        return x.mean(dim=(2, 3))


@register("arch", "small-resnet", params=SmallResNetParams)
def build(p: SmallResNetParams, in_channels: int, image_size: tuple[int, int]) -> SmallResNet:
    """Build ``small-resnet`` from its YAML params (see ``SmallResNetParams``)."""
    if any(n < 1 for n in p.blocks):
        raise ClBenchError(f"arch small-resnet: every entry of 'blocks' must be >= 1, got {p.blocks}")
    stride = p.stem_stride if p.stem_stride != "auto" else (2 if min(image_size) >= 32 else 1)
    where = "arch small-resnet"
    return SmallResNet(
        in_channels,
        width=p.width,
        blocks=p.blocks,
        stem_stride=stride,
        mean=per_channel(p.mean, in_channels, "mean", where),
        std=per_channel(p.std, in_channels, "std", where),
        zero_init_residual=p.zero_init_residual,
    )
