"""``clbench export --to detectron2|mmdet|mmseg CHECKPOINT OUT``: a ResNet backbone in another
framework's key layout and file format, for running the papers' own detection configs.

Input: any checkpoint cl_bench can load into a torchvision-layout ResNet (an encoder
``encoder.safetensors`` from the cache, a ``torch.save`` file, a released MoCo/PixPro/...
checkpoint: container keys and prefixes such as ``module.encoder_q.`` are undone by
:func:`cl_bench.models.weights.checkpoint.read_state_dict` / :func:`choose_prefix`). Only backbone
keys (``conv1``, ``bn1``, ``layer1`` ... ``layer4``) are exported; heads, ``fc`` and momentum
copies are dropped and counted.

- ``detectron2``: a pickle ``{"model": {name: numpy array}, "__author__": "cl_bench",
  "matching_heuristics": True}`` (the format detectron2's ``DetectionCheckpointer`` reads
  for ``.pkl`` files), with detectron2's ResNet names: ``stem.conv1``/``stem.conv1.norm``,
  ``layerK`` -> ``res{K+1}``, ``bnI`` -> ``convI.norm``, ``downsample.0`` -> ``shortcut``,
  ``downsample.1`` -> ``shortcut.norm`` (BN ``num_batches_tracked`` dropped). Use it with
  ``MODEL.PIXEL_MEAN/STD`` of torchvision (RGB, ×255: [123.675, 116.28, 103.53] /
  [58.395, 57.12, 57.375]), ``INPUT.FORMAT: RGB`` and ``MODEL.RESNETS.STRIDE_IN_1X1: False``,
  as MoCo's and PixPro's ``*_moco.yaml`` / ``*_PixPro.yaml`` configs do.
- ``mmdet`` / ``mmseg``: ``torch.save({"state_dict": {torchvision names}, "meta": {...}})``
  (``.pth``): mmdet's and mmseg's ``ResNet`` (``ResNetV1b``, not the deep-stem ``V1c``) use
  torchvision's key names; load with ``init_cfg=dict(type="Pretrained", checkpoint=OUT)``
  on the backbone (MMSelfSup's ``extract_backbone_weights`` produces the same layout).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from cl_bench.atomic import write_atomic
from cl_bench.errors import ClBenchError
from cl_bench.models.weights.checkpoint import choose_prefix, read_state_dict

TARGETS = ("detectron2", "mmdet", "mmseg")
_BACKBONE = re.compile(r"^(conv1\.weight|bn1\.(weight|bias|running_mean|running_var)|layer[1-4]\..+)$")


def backbone_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The torchvision-layout ResNet backbone tensors of a checkpoint file, and a report."""
    state = read_state_dict(Path(path))
    candidates = {k for k in _probe_keys(state) if _BACKBONE.match(k)}
    prefix = choose_prefix(set(state), candidates) if candidates else ""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, tensor in state.items():
        name = key[len(prefix):] if key.startswith(prefix) else None
        if name is not None and _BACKBONE.match(name) and not name.endswith("num_batches_tracked"):
            out[name] = tensor.detach().cpu()
        else:
            dropped.append(key)
    if "conv1.weight" not in out or not any(k.startswith("layer4.") for k in out):
        raise ClBenchError(
            f"checkpoint {path} holds no torchvision-layout ResNet backbone (conv1 ... layer4); "
            "export works for resnet18/resnet50 encoders (small-resnet has no counterpart in detectron2/mmdet)"
        )
    return out, {"prefix": prefix, "n_exported": len(out), "n_dropped": len(dropped), "dropped": dropped[:20]}


def _probe_keys(state: dict[str, torch.Tensor]) -> set[str]:
    """Every suffix of every key after a '.' (candidate backbone names under some prefix)."""
    keys: set[str] = set()
    for k in state:
        keys.add(k)
        for i, ch in enumerate(k):
            if ch == ".":
                keys.add(k[i + 1:])
    return keys


def detectron2_name(name: str) -> str:
    """torchvision ResNet key -> detectron2 ResNet key."""
    if not name.startswith("layer"):
        name = "stem." + name
    name = re.sub(r"layer([1-4])", lambda m: f"res{int(m.group(1)) + 1}", name)
    name = re.sub(r"\bbn([1-3])\b", r"conv\1.norm", name)
    name = name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
    return name


def to_detectron2(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    model = {detectron2_name(k): v.float().numpy() for k, v in state.items()}
    return {"model": model, "__author__": "cl_bench", "matching_heuristics": True}


def export(checkpoint: Path, out: Path, to: str) -> dict[str, Any]:
    """Write the converted backbone to ``out``; returns a report."""
    if to not in TARGETS:
        raise ClBenchError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    out = Path(out)
    if not out.parent.is_dir():
        raise ClBenchError(f"cannot write {out}: folder {out.parent} does not exist")
    state, report = backbone_state(Path(checkpoint))
    if to == "detectron2":
        if out.suffix != ".pkl":
            raise ClBenchError(f"detectron2 reads converted weights from a .pkl file; name the output {out.stem}.pkl")
        blob = pickle.dumps(to_detectron2(state), protocol=4)
        write_atomic(out, blob)
        note = ("detectron2 config: MODEL.WEIGHTS <out.pkl>, INPUT.FORMAT RGB, MODEL.PIXEL_MEAN [123.675, 116.28, "
                "103.53], MODEL.PIXEL_STD [58.395, 57.12, 57.375], MODEL.RESNETS.STRIDE_IN_1X1 False")
    else:
        if out.suffix != ".pth":
            raise ClBenchError(f"{to} reads checkpoints from a .pth file; name the output {out.stem}.pth")
        tmp = out.with_name(f".{out.name}.tmp")
        torch.save({"state_dict": {k: v.contiguous() for k, v in state.items()},
                    "meta": {"source": str(checkpoint), "exported_by": "cl_bench", "layout": "torchvision ResNet"}},
                   tmp)
        tmp.replace(out)
        note = (f"{to} config: backbone=dict(type='ResNet', depth=50|18, norm_eval=False, "
                f"init_cfg=dict(type='Pretrained', checkpoint='{out}'))")
    return {"to": to, "out": str(out), "note": note, **report}


def cli_export(checkpoint: str, out: str, to: str) -> int:
    """What ``clbench export`` does: convert, print a two-line summary; 0 on success."""
    report = export(Path(checkpoint), Path(out), to)
    print(f"exported {report['n_exported']} backbone tensors to {report['out']} ({to}); "
          f"dropped {report['n_dropped']} non-backbone keys (prefix {report['prefix']!r})")
    print(report["note"])
    return 0
