"""``timm``: any timm architecture by name, as an image encoder (weights from a local file).

``arch: {name: timm, params: {model: resnet50}}`` builds ``timm.create_model(model,
pretrained=False, num_classes=0)`` - the pooled pre-classifier features, no download. Weights
come from ``--checkpoint`` (a ``model.safetensors`` / ``pytorch_model.bin`` as published on the
hub, copied locally): timm state-dict keys are the model's own, so the checkpoint loader maps
them directly and reports the dropped classifier (``fc.*`` / ``head.*``). The input
normalisation is the model's ``pretrained_cfg`` mean/std unless the YAML overrides it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.image.small_resnet import per_channel
from cl_bench.specs import validate_params
from cl_bench.suggest import did_you_mean


class TimmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, min_length=1)  # else: from a hub folder's config.json
    mean: float | list[float] | None = None  # default: the model's pretrained_cfg
    std: float | list[float] | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)  # extra create_model arguments (e.g. drop_path_rate)


def _prepare_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
    """Forward pre-hook: repeat 1-channel images to 3 channels, then normalise with the model's mean/std."""
    images = args[0]
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return ((images - module.clbench_mean) / module.clbench_std, *args[1:])


def as_image_encoder(model_name: str, net: nn.Module, mean: list[float], std: list[float]) -> nn.Module:
    """Turn a timm model (``num_classes=0``) into an image encoder *in place*.

    The model is not wrapped, so its state-dict keys stay exactly timm's and released timm weights
    load without a prefix. Mean/std become non-persistent buffers (outside the state dict, moved by
    ``.to()``, hashed by the fingerprint) applied by a forward pre-hook on [0, 1] pixels.
    """
    net.register_buffer(
        "clbench_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
    )
    net.register_buffer(
        "clbench_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
    )
    net.register_forward_pre_hook(_prepare_input)
    net.arch_name = f"timm:{model_name}"
    net.embed_dim = int(net.num_features)
    return net


@register("arch", "timm")
def build(params: dict, in_channels: int, image_size: tuple[int, int]) -> nn.Module:
    """Build the timm model named by ``params['model']`` without pretrained weights."""
    p: TimmParams = validate_params(TimmParams, params, where="arch timm")
    if p.model is None:
        raise ClBenchError("arch timm needs a model name: --arch-param model=resnet50 (see timm.list_models()), "
                           "or --checkpoint a timm hub folder whose config.json names the architecture")
    try:
        import timm
    except ImportError:
        raise ClBenchError("arch timm needs the timm package: pip install timm") from None
    if not timm.is_model(p.model):
        raise ClBenchError(
            f"arch timm: unknown timm model {p.model!r}{did_you_mean(p.model, timm.list_models())}"
        )
    if in_channels not in (1, 3):
        raise ClBenchError(f"arch timm takes 1- or 3-channel images, the data has {in_channels}")
    try:
        net = timm.create_model(p.model, pretrained=False, num_classes=0, **p.kwargs)
    except (TypeError, ValueError, AssertionError) as e:
        raise ClBenchError(f"arch timm: cannot build {p.model!r} with {p.kwargs} ({e})") from None
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    mean = p.mean if p.mean is not None else list(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = p.std if p.std is not None else list(cfg.get("std", (0.229, 0.224, 0.225)))
    where = f"arch timm ({p.model})"
    return as_image_encoder(
        p.model, net, per_channel(mean, 3, "mean", where), per_channel(std, 3, "std", where)
    )


TIMM_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def timm_from_checkpoint(path: Path, params: dict) -> tuple[dict, Path]:
    """``--checkpoint DIR`` of a timm hub folder (``config.json`` + ``model.safetensors``): the
    architecture and its mean/std come from ``config.json`` unless the params set them."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return params, path
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ClBenchError(f"{path}: not a timm hub folder (config.json unreadable: {e})") from None
    arch = cfg.get("architecture") if isinstance(cfg, dict) else None
    if not isinstance(arch, str) or not arch:
        raise ClBenchError(f"{path}/config.json names no 'architecture'; pass --arch-param model=NAME and the weights file")
    if params.get("model") not in (None, arch):
        raise ClBenchError(f"{path} holds a {arch} but the method's arch is timm model {params['model']!r}")
    params["model"] = arch
    pretrained = cfg.get("pretrained_cfg") or {}
    for key in ("mean", "std"):
        if key in pretrained and params.get(key) is None:
            params[key] = list(pretrained[key])
    for name in TIMM_WEIGHT_FILES:
        if (path / name).is_file():
            return params, path / name
    raise ClBenchError(f"{path} holds no timm weights ({' or '.join(TIMM_WEIGHT_FILES)})")


build.from_checkpoint = timm_from_checkpoint  # type: ignore[attr-defined]
