"""A small VGG-style CNN that downsamples by max-pooling, and CLIP's attention pooling.

:class:`PoolConvNet` — stem: 3x3 conv + BN + ReLU at full resolution; stage ``i``: a 2x2 max-pool,
then ``blocks[i]`` 3x3 conv + BN + ReLU layers of ``width * 2**(i + 1)`` channels. Small shapes of a
few pixels keep their edges through a max-pool where a strided convolution samples every other
pixel: on the embedded scenes (objects of 4–15 px radius at 64 px), a supervised 6-way shape
classifier trained on 2,000 single-object scenes reaches 52.8 % on 500 held-out scenes with this net
(width 24, blocks [1, 2], global max, 16 epochs) while scene-clip's ``small-resnet`` (width 16,
strided stem and shortcuts, mean pool) memorises them: 100 % train, 22.6 % held out (majority
17.8 %; benchmarks/scene_towers.py, RESULTS.md). Same stage interface as ``small-resnet`` (``normalize``, ``stem``,
``stages``, ``feature_maps``), so the dense protocols can take it as a trunk.

:class:`AttentionPool2d` — CLIP's ModifiedResNet head (Radford et al. 2021, §2.4): the map's
positions and their mean as tokens, plus a learned positional embedding, one multi-head attention
with the mean token as the only query; its output is the global feature. Unlike a mean or a max
it keeps *where* things are (left of / above), which the scenes' captions talk about.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cl_bench.errors import ClBenchError
from cl_bench.models.image.small_resnet import InputNormalization, init_resnet, stage_maps


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class PoolConvNet(nn.Module):
    """See the module docstring; ``embed_dim`` = the last stage's channels."""

    def __init__(self, in_channels: int, width: int, blocks: Sequence[int], mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = InputNormalization(mean, std)
        self.stem = conv_bn_relu(in_channels, width)
        stages: list[nn.Module] = []
        ch = width
        for i, n in enumerate(blocks):
            out = width * 2 ** (i + 1)
            layers: list[nn.Module] = [nn.MaxPool2d(2)]
            for _ in range(n):
                layers.append(conv_bn_relu(ch, out))
                ch = out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.embed_dim = ch
        init_resnet(self, nn.Sequential, zero_init_residual=False)

    def feature_maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return stage_maps(self, images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_maps(images)[f"stage{len(self.stages)}"].mean(dim=(2, 3))


class AttentionPool2d(nn.Module):
    """CLIP's attention pooling over a ``[N, C, h, w]`` map of a fixed ``grid`` size -> ``[N, C]``."""

    def __init__(self, grid: tuple[int, int], channels: int, heads: int) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.positional_embedding = nn.Parameter(torch.randn(grid[0] * grid[1] + 1, channels) / channels**0.5)
        self.attention = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        if tuple(fmap.shape[-2:]) != self.grid:
            raise ClBenchError(f"attention pooling was built for a {self.grid} feature map (the training image size), "
                               f"got {tuple(fmap.shape[-2:])}: evaluate at the image size the model was trained on")
        tokens = fmap.flatten(2).transpose(1, 2)  # [N, h*w, C]
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + self.positional_embedding
        out, _ = self.attention(tokens[:, :1], tokens, tokens, need_weights=False)
        return out[:, 0]
