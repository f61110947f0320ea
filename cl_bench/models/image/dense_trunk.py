"""A uniform, stage-by-stage view of a residual image encoder, for the dense protocols.

Detection and segmentation need the backbone as ``stem -> stage 1 -> ... -> stage K`` with
each stage's output channels and stride. :func:`trunk_of` builds that view from the two
residual encoders cl_bench ships (torchvision ``resnet18``/``resnet50``: stages ``res2`` ...
``res5``; ``small-resnet``: ``stage1`` ... ``stageK``). The trunk *shares* the encoder's
modules: fine-tuning the trunk fine-tunes the method's encoder, and no weight is copied.

Also here, because both protocols use them: BatchNorm handling (:func:`set_batchnorm`:
``frozen`` -> torchvision ``FrozenBatchNorm2d`` with the pretrained statistics, ``finetune``
-> ordinary BN in train mode, ``sync`` -> ``SyncBatchNorm`` when ``torch.distributed`` is
initialised, else the same as ``finetune`` since one process *is* the whole batch),
freezing the first stages (:func:`freeze_at`, detectron2's ``FREEZE_AT``) and dilating the
last stages to reach an output stride (:func:`dilate_to_output_stride`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from cl_bench.errors import ClBenchError

BNMode = Literal["frozen", "finetune", "sync"]
#: detectron2 FREEZE_AT (0 = train everything) or "all" (the whole backbone: a frozen-feature probe)
FreezeAt = Annotated[int, Field(ge=0)] | Literal["all"]


class Trunk(nn.Module):
    """``normalize -> stem -> stages``; ``forward`` returns the named stage outputs asked for."""

    def __init__(self, normalize: nn.Module, stem: nn.Module, stages: OrderedDict[str, nn.Module]) -> None:
        super().__init__()
        self.normalize = normalize
        self.stem = stem
        self.stages = nn.ModuleDict(stages)
        self.channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}

    @property
    def names(self) -> list[str]:
        return list(self.stages.keys())

    def forward(self, images: torch.Tensor, upto: str | None = None) -> OrderedDict[str, torch.Tensor]:
        """Outputs of every stage up to and including ``upto`` (default: all)."""
        x = self.stem(self.normalize(images))
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name, stage in self.stages.items():
            x = stage(x)
            out[name] = x
            if name == upto:
                break
        return out


@dataclass
class TrunkInfo:
    names: list[str]
    channels: dict[str, int]
    strides: dict[str, int]


def trunk_of(encoder: nn.Module) -> Trunk:
    """The stage view of ``encoder`` (shares its modules); other encoders -> ClBenchError.

    An encoder with a pretrained FPN (``with-fpn``) gives its body's stages; the detector takes the FPN.
    """
    if hasattr(encoder, "fpn") and hasattr(encoder, "body"):
        return trunk_of(encoder.body)
    arch = getattr(encoder, "arch_name", type(encoder).__name__)
    if all(hasattr(encoder, a) for a in ("conv1", "bn1", "relu", "maxpool", "layer4", "normalize")):
        if getattr(encoder, "in_channels", 3) != 3:
            raise ClBenchError(f"arch {arch} was built for {encoder.in_channels}-channel images; dense tasks are RGB")
        stem = nn.Sequential(encoder.conv1, encoder.bn1, encoder.relu, encoder.maxpool)
        stages = OrderedDict((f"res{i + 2}", getattr(encoder, f"layer{i + 1}")) for i in range(4))
    elif all(hasattr(encoder, a) for a in ("stem", "stages", "normalize")):
        stem = encoder.stem
        stages = OrderedDict((f"stage{i + 1}", s) for i, s in enumerate(encoder.stages))
    else:
        raise ClBenchError(
            f"arch {arch} exposes no residual stages: the detection and segmentation protocols need "
            "a resnet18/resnet50/small-resnet encoder"
        )
    trunk = Trunk(encoder.normalize, stem, stages)
    measure(trunk)
    return trunk


@torch.no_grad()
def measure(trunk: Trunk, size: int = 64) -> TrunkInfo:
    """Fill ``trunk.channels`` / ``trunk.strides`` by one dry run (eval mode, RNG untouched)."""
    was = trunk.training
    trunk.eval()
    p = next(trunk.parameters())
    maps = trunk(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype))
    trunk.train(was)
    trunk.channels = {k: int(v.shape[1]) for k, v in maps.items()}
    trunk.strides = {k: max(1, round(size / v.shape[-1])) for k, v in maps.items()}
    return TrunkInfo(list(maps), trunk.channels, trunk.strides)


def set_batchnorm(module: nn.Module, mode: BNMode) -> tuple[nn.Module, str]:
    """Apply the BN policy; returns (module, what was done in words)."""
    if mode == "frozen":
        return _freeze_bn(module), "frozen (FrozenBatchNorm2d, pretrained statistics and affine)"
    if mode == "sync":
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return nn.SyncBatchNorm.convert_sync_batchnorm(module), f"SyncBN over {dist.get_world_size()} processes"
        return module, "sync requested, one process: plain BN over the whole batch (identical)"
    return module, "fine-tuned (batch statistics)"


def _freeze_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            frozen.weight.copy_(module.weight if module.affine else torch.ones_like(frozen.weight))
            frozen.bias.copy_(module.bias if module.affine else torch.zeros_like(frozen.bias))
            if module.running_mean is not None:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = _freeze_bn(child)
        if new is not child:
            setattr(module, name, new)
    return module


def freeze_at(trunk: Trunk, n: FreezeAt) -> list[str]:
    """detectron2's FREEZE_AT: 0 trains everything, 1 freezes the stem, k freezes stem + k-1 stages;
    ``"all"``: stem and every stage, whatever the encoder's depth (frozen-feature dense probes)."""
    if n == "all":
        n = len(trunk.stages) + 1
    if not 0 <= n <= len(trunk.stages) + 1:
        raise ClBenchError(f"freeze_at must be 0..{len(trunk.stages) + 1}, got {n}")
    frozen: list[str] = []
    parts: list[tuple[str, nn.Module]] = [("stem", trunk.stem), *trunk.stages.items()]
    for name, part in parts[:n]:
        for p in part.parameters():
            p.requires_grad_(False)
        frozen.append(name)
    return frozen


def dilate_to_output_stride(trunk: Trunk, output_stride: int) -> list[str]:
    """Replace the stride-2 convs of the last stages by dilation until the last stage's stride
    is at most ``output_stride`` (the "-d8" backbones of mmseg / DeepLab); returns the stages changed.

    Every 3x3 conv of a dilated stage gets dilation ``d`` and padding ``d``, where ``d`` doubles
    at each dilated stage (ResNet-50 to stride 8: res4 d=2, res5 d=4, as mmseg's dilations (1, 1, 2, 4)).
    """
    names = trunk.names
    strides = dict(trunk.strides)
    to_dilate: list[str] = []
    stride = strides[names[-1]]
    for name in reversed(names):
        if stride <= output_stride:
            break
        prev = strides[names[names.index(name) - 1]] if names.index(name) > 0 else 0
        if prev == 0 or strides[name] == prev:  # a stage that does not downsample: nothing to undo
            continue
        to_dilate.insert(0, name)
        stride //= 2
    if stride > output_stride:
        raise ClBenchError(f"cannot reach output stride {output_stride}: the stem alone has a larger stride")
    d = 1
    for name in to_dilate:
        d *= 2
        for m in trunk.stages[name].modules():
            if isinstance(m, nn.Conv2d):
                if m.stride == (2, 2):
                    m.stride = (1, 1)
                if m.kernel_size == (3, 3):
                    m.dilation, m.padding = (d, d), (d, d)
            elif isinstance(m, nn.AvgPool2d) and m.stride in (2, (2, 2)):  # anti-aliased downsampling (CLIP ResNets)
                m.kernel_size, m.stride = 1, 1
    if to_dilate:
        measure(trunk)
        if trunk.strides[names[-1]] > output_stride:
            raise ClBenchError(f"cannot dilate this encoder to output stride {output_stride}: its stages downsample "
                               f"in a way dilation does not undo (now {trunk.strides[names[-1]]})")
    return to_dilate
