"""Safe loading of user and released checkpoints into an encoder.

Files are read with ``safetensors`` or ``torch.load(weights_only=True)`` only; a pickle
that needs anything beyond plain containers and tensors is refused before any of it
runs. Released checkpoints wrap their weights in containers (``state_dict``, ``model``,
``teacher`` ...) and prefix the keys (``module.encoder_q.``, ``backbone.`` ...): both are
undone automatically, and whatever does not belong to the encoder (classifier, heads,
queue, momentum copy) is dropped and listed in the ``LoadReport``.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from cl_bench.errors import ClBenchError
from cl_bench.models.weights.fingerprint import file_sha256
from cl_bench.models.weights.released_formats import (
    CONTAINER_KEYS,
    check_declared_layout,
    read_released_state_dict,
    read_safetensors,
)
from cl_bench.specs import ReleasedWeights

# Preferred prefixes, best first; any other prefix found in the file is also tried.
KNOWN_PREFIXES = (
    "",
    "module.encoder_q.",
    "module.encoder.",
    "module.base_encoder.",
    "module.backbone.",
    "module.online_network.",
    "module.",
    "encoder_q.",
    "encoder.",
    "base_encoder.",
    "backbone.",
    "online_network.",
    "model.",
    "trunk.",
    "base_model.",
    "net.",
    "teacher.backbone.",
    "student.backbone.",
    "teacher.",
    "student.",
)
_MOMENTUM_PARTS = {
    "encoder_k",
    "key_encoder",
    "target",
    "target_network",
    "target_encoder",
    "ema",
    "model_ema",
    "ema_model",
}
_MAX_NESTING = 4


@dataclass
class LoadReport:
    """What ``load_into`` did: which file, which key prefix, what was loaded and dropped."""

    path: str
    sha256: str
    prefix: str
    n_loaded: int
    missing: list[str] = field(default_factory=list)  # only BN num_batches_tracked may be missing
    dropped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "n_dropped": len(self.dropped)}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a checkpoint file (``.safetensors``, or a ``torch.save`` file).

    Containers such as ``{"state_dict": {...}, "optimizer": ...}`` are unwrapped (see
    ``CONTAINER_KEYS``); non-tensor values are left out. Missing, corrupt, unsafe or
    tensor-free files raise ClBenchError.
    """
    path = Path(path)
    if not path.exists():
        raise ClBenchError(f"checkpoint {path} does not exist; check the --checkpoint path")
    if not path.is_file():
        raise ClBenchError(f"checkpoint {path} is not a file; pass the checkpoint file itself")
    obj = read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    state = _unwrap(obj, 0)
    if not state:
        raise ClBenchError(
            f"checkpoint {path} holds no state dict ({_describe(obj)}); "
            f"expected a dict of tensors, possibly under one of {', '.join(CONTAINER_KEYS)}"
        )
    return state


def _read_torch(path: Path) -> Any:
    unsafe = _unsafe_globals(path)
    if unsafe:
        _refuse(path, "globals " + ", ".join(sorted(unsafe)[:5]))
    try:
        with warnings.catch_warnings():  # torch's advice is about trusting the file: we never do
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for truncated or foreign files
        message = str(e)
        if "TorchScript" in message:
            raise ClBenchError(
                f"checkpoint {path} is a TorchScript archive, not a state dict; save the "
                "module's state_dict() with safetensors or torch.save and pass that file"
            ) from None
        if "Weights only load failed" in message:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
            operand = re.search(r"Unsupported operand (\d+)", message)
            if found:
                _refuse(path, f"global {found.group(1)}")
            if operand:
                _refuse(path, f"pickle opcode {operand.group(1)}")
            _refuse(path, _short(e))
        raise ClBenchError(
            f"checkpoint {path} is not a readable torch checkpoint ({_short(e)}); "
            "it may be truncated, corrupt or another format: download or export it again"
        ) from None


def _unsafe_globals(path: Path) -> list[str]:
    """Python globals a torch zip checkpoint's pickle names beyond the weights-only allowlist.

    Found by disassembling the pickle, never by running it. Non-zip files give [] (their
    unsafe content is caught by the weights-only unpickler itself).
    """
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - not a zip checkpoint, or a broken one: torch.load reports it
        return []


def _refuse(path: Path, what: str) -> NoReturn:
    raise ClBenchError(
        f"checkpoint {path} refused: it contains pickled Python objects that would run code on "
        f"load ({what}); convert it to safetensors (or a plain state dict) where you trust it, "
        "and pass that file"
    )


def _unwrap(obj: Any, depth: int) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or depth > _MAX_NESTING:
        return {}
    for key in CONTAINER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            found = _unwrap(inner, depth + 1)
            if found:
                return found
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _is_momentum(prefix: str) -> bool:
    return any("momentum" in part or part in _MOMENTUM_PARTS for part in prefix.split(".") if part)


def choose_prefix(state_keys: set[str] | list[str], target_keys: set[str]) -> str:
    """The key prefix whose stripped keys cover the most ``target_keys``.

    Candidates are every prefix (ending in '.') under which some checkpoint key names a
    target key. Ties go to a non-momentum prefix (so an online encoder beats its momentum
    copy, but a momentum-only file still loads), then to ``KNOWN_PREFIXES`` order, then
    to the shorter prefix.
    """
    coverage: Counter[str] = Counter()
    for key in state_keys:
        if key in target_keys:
            coverage[""] += 1
        for i, ch in enumerate(key):
            if ch == "." and key[i + 1 :] in target_keys:
                coverage[key[: i + 1]] += 1
    if not coverage:
        return ""
    known = {p: i for i, p in enumerate(KNOWN_PREFIXES)}

    def rank(p: str) -> tuple[int, bool, int, int, str]:
        return (-coverage[p], _is_momentum(p), known.get(p, len(known)), len(p), p)

    return min(coverage, key=rank)


def remap_keys(
    state: Mapping[str, torch.Tensor], target_keys: set[str], prefix: str | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Strip ``prefix`` (default: ``choose_prefix``) and keep the keys the target has.

    Returns ``(mapped, dropped)``: target key -> tensor, and the sorted original keys
    that did not map (heads, classifier, queue, momentum copies, ...).
    """
    if prefix is None:
        prefix = choose_prefix(set(state), target_keys)
    mapped: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, tensor in state.items():
        stripped = key[len(prefix) :] if key.startswith(prefix) else None
        if stripped is not None and stripped in target_keys:
            mapped[stripped] = tensor
        else:
            dropped.append(key)
    return mapped, sorted(dropped)


def load_into(encoder: nn.Module, path: Path, layout: ReleasedWeights | None = None) -> LoadReport:
    """Load the checkpoint at ``path`` into ``encoder`` (strict on the backbone).

    Every encoder key must come from the file with the right shape, except BatchNorm
    ``num_batches_tracked``; otherwise ClBenchError names the missing or misshapen keys. With a
    method's released ``layout`` (an ``encoder_prefix``), that prefix is used and every other key
    of the file must be one of the ``dropped`` heads it documents.
    """
    path = Path(path)
    arch = getattr(encoder, "arch_name", type(encoder).__name__)
    target = encoder.state_dict()
    if not target:
        raise ClBenchError(f"arch {arch} has no weights: it cannot load checkpoint {path}")
    state = read_released_state_dict(path)  # any released layout; pickled extras stay inert
    declared = layout is not None and layout.encoder_prefix is not None
    prefix = layout.encoder_prefix if declared else choose_prefix(set(state), set(target))
    mapped, dropped = remap_keys(state, set(target), prefix)
    if declared:
        check_declared_layout(path, dropped, layout)
    missing = [k for k in target if k not in mapped]
    fatal = [k for k in missing if not k.endswith("num_batches_tracked")]
    if fatal:
        matched = (
            f"key prefix {prefix!r} matched {len(mapped)} of {len(target)}"
            if mapped
            else f"no checkpoint key matches; they look like {next(iter(state))!r}"
        )
        raise ClBenchError(
            f"checkpoint {path.name} does not fit arch {arch}: {len(fatal)} missing keys "
            f"e.g. {', '.join(fatal[:3])} ({matched}); check --method / the architecture"
        )
    wrong = [k for k in mapped if mapped[k].shape != target[k].shape]
    if wrong:
        k = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise ClBenchError(
            f"checkpoint {path.name} does not fit arch {arch}: {k} has shape "
            f"{list(mapped[k].shape)} in the checkpoint but {list(target[k].shape)} in the arch{more}; "
            "check --method / the architecture"
        )
    encoder.load_state_dict(mapped, strict=False)
    return LoadReport(
        path=str(path),
        sha256=file_sha256(path),
        prefix=prefix,
        n_loaded=len(mapped),
        missing=missing,
        dropped=dropped,
    )


def _short(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(e).__name__}: {first[:160]}" if first else type(e).__name__


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:5]]
        return f"a dict with keys {', '.join(keys)}" if keys else "an empty dict"
    return f"a {type(obj).__name__}"
