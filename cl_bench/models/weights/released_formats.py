"""Released-checkpoint layouts of the SSL papers and libraries, read without running their code.

``read_released(path)`` returns the flat ``{key: tensor}`` of the file's model (every key,
heads included, so the loader can report what it drops) and names the layout it recognised:

============  ====================================================================================
layout        what the file holds (the encoder keys end up under the prefix shown)
============  ====================================================================================
vissl         ``classy_state_dict.base_model.model.{trunk,heads}``; trunk keys ``_feature_blocks.*``
lightning     ``state_dict`` + ``pytorch-lightning_version``/``hyper_parameters`` (solo-learn:
              ``backbone.*``, ``projector.*``, ``momentum_backbone.*``; lightly: ``backbone.<i>.*``)
mmselfsup     ``state_dict`` + ``meta`` (mmengine); ``backbone.*``, ``neck.*``, ``head.*``
pixpro        ``model`` + ``opt`` (an ``argparse.Namespace``); ``module.encoder.*``, ``module.encoder_k.*``
moco          ``state_dict`` + ``arch``; v1/v2 ``module.encoder_q.*``, v3 and CACR ``module.base_encoder.*``
plain         a bare state dict (SimCLR converted, timm weights, DCL's ``f.<i>.*``) or another container
============  ====================================================================================

Key rewrites: a torchvision ResNet flattened into ``nn.Sequential(*resnet.children())`` (lightly's
``backbone.0.weight`` ... ``backbone.7.2.bn3.bias``; DCL/SimCLR-CIFAR code with the max-pool
removed, ``f.0.weight`` ... ``f.6.2.bn3.bias``) gets its child names back (``conv1``, ``bn1``,
``layer1`` ...). The prefix itself (``backbone.``, ``module.encoder_q.`` ...) is stripped later by
``checkpoint.choose_prefix``.

Pickled extras (Lightning hyper-parameters, ``argparse.Namespace``, omegaconf configs, mmengine
message hubs, numpy scalars) are read with ``torch.load(weights_only=True)``: numpy arrays and
scalars through an explicit allow-list, every other class through an *inert placeholder*
registered under its name - an empty object that keeps the constructor arguments and state as
data and never imports or calls the real class. Placeholders themselves are allow-listed
(:mod:`cl_bench.models.weights.unpickle_policy`): third-party classes and the standard library's data
types only; any other standard-library name (``eval``, ``os.system``, ``subprocess``, Python 2's
``__builtin__`` / ``commands`` spellings ...) is refused outright.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

from cl_bench.errors import ClBenchError
from cl_bench.specs import ReleasedWeights

_MAX_RETRIES = 64
# The containers released checkpoints wrap their weights in, best first (the one list: the checkpoint
# loader unwraps the same ones).
CONTAINER_KEYS = (
    "state_dict",
    "model",
    "module",
    "network",
    "teacher",
    "student",
    "encoder",
    "backbone_state_dict",
    "model_state_dict",
)


class InertObject:
    """Stands in for an object of a class that is not imported: holds its pickled data only."""

    inert_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        obj = object.__new__(cls)
        obj.__dict__["inert_args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # REDUCE calls cls(*args): keep nothing else
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["inert_state"] = state

    def __repr__(self) -> str:
        return f"<inert {self.inert_name}>"


def placeholder_for(name: str) -> type[InertObject]:
    """A fresh ``InertObject`` subclass standing for the global ``name`` (``module.Qualname``)."""
    short = re.sub(r"\W", "_", name.rsplit(".", 1)[-1]) or "Inert"
    return type(short, (InertObject,), {"inert_name": name, "__module__": __name__ + ".inert"})


def is_dangerous(name: str) -> bool:
    """True for globals that may not even be stood in for (refused): every standard-library name
    (Python 2 spellings included) but the data types of ``unpickle_policy.STDLIB_DATA``, and
    packages that serialise code. See :mod:`cl_bench.models.weights.unpickle_policy`."""
    from cl_bench.models.weights.unpickle_policy import refusal

    return refusal(name) is not None


def _numpy_allowlist() -> list[Any]:
    """The real numpy callables/types needed to rebuild plain arrays and scalars (torch's advice)."""
    from numpy import dtypes

    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # type: ignore[attr-defined]
    allowed: list[Any] = [np.ndarray, np.dtype]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(core._reconstruct, f"{mod}._reconstruct"), (core.scalar, f"{mod}.scalar")]
    for attr in dir(dtypes):
        cls = getattr(dtypes, attr)
        if isinstance(cls, type) and issubclass(cls, np.dtype):
            allowed.append((cls, f"numpy.dtypes.{attr}"))
    return allowed


def _refuse(path: Path, what: str) -> ClBenchError:
    return ClBenchError(
        f"checkpoint {path} refused: it contains pickled Python objects that would run code on load "
        f"({what}, which only serves to execute code); "
        "convert it to safetensors (or a plain state dict) where you trust it, and pass that file"
    )


_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
}


def pickle_globals(data: bytes, max_pickles: int = 8) -> set[str]:
    """Every ``module.name`` the pickle stream(s) in ``data`` refer to, by static disassembly.

    Nothing is unpickled: ``pickletools.genops`` only decodes opcodes. A legacy ``torch.save``
    file is several pickles in a row (magic, protocol, sys info, the object, storage keys).
    """
    import io
    import pickletools

    found: set[str] = set()
    stream = io.BytesIO(data)
    for _ in range(max_pickles):
        if stream.tell() >= len(data):
            break
        memo: dict[int, Any] = {}
        pushed: list[Any] = []
        try:
            for op, arg, _pos in pickletools.genops(stream):
                name = op.name
                if name == "GLOBAL":
                    found.add(str(arg).replace(" ", "."))
                elif name in _STRING_OPS:
                    pushed.append(arg.decode("latin1") if isinstance(arg, bytes) else arg)
                elif name in ("BINPUT", "LONG_BINPUT", "PUT") and pushed:
                    memo[int(arg)] = pushed[-1]
                elif name == "MEMOIZE" and pushed:
                    memo[len(memo)] = pushed[-1]
                elif name in ("BINGET", "LONG_BINGET", "GET"):
                    pushed.append(memo.get(int(arg)))
                elif name == "STACK_GLOBAL" and len(pushed) >= 2:
                    found.add(f"{pushed[-2]}.{pushed[-1]}")
                if len(pushed) > 4:
                    del pushed[:-4]
        except Exception:  # noqa: BLE001 - end of the pickles, or raw storage bytes follow
            break
    return found


def _allowed_by_torch() -> set[str]:
    from torch import _weights_only_unpickler as wou

    return set(wou._get_allowed_globals())


def _scan_globals(path: Path) -> list[str]:
    """Globals the file names beyond torch's weights-only allow-list (zip: data.pkl; else the stream)."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001, S110 - not a zip checkpoint: disassemble the raw pickle stream
        pass
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ClBenchError(f"checkpoint {path}: cannot read ({e.strerror})") from None
    return sorted(pickle_globals(data) - _allowed_by_torch())


def _check_names(path: Path, names: list[str]) -> None:
    """Refuse code-running globals (named first), then torch internals the weights-only loader lacks."""
    from cl_bench.models.weights.unpickle_policy import refusal

    for name in names:
        why = refusal(name)
        if why is not None:
            raise _refuse(path, why)
    for name in names:
        if name.split(".")[0] == "torch":
            raise ClBenchError(
                f"checkpoint {path} stores tensors through {name}, which the weights-only loader cannot "
                "rebuild (a plain pickle of tensors); re-save it with torch.save or safetensors"
            )


def load_with_placeholders(path: Path) -> tuple[Any, list[str]]:
    """``torch.load(weights_only=True)`` with numpy allowed and unknown classes as inert placeholders.

    Returns the loaded object and the sorted names that were replaced by placeholders.
    """
    path = Path(path)
    stubs: dict[str, type[InertObject]] = {}
    names = _scan_globals(path)
    numpy_ok = _numpy_allowlist()
    numpy_names = {a[1] if isinstance(a, tuple) else f"{a.__module__}.{a.__qualname__}" for a in numpy_ok}
    for _ in range(_MAX_RETRIES):
        names = [n for n in names if n not in numpy_names]
        _check_names(path, names)
        for name in names:
            stubs.setdefault(name, placeholder_for(name))
        allowed = numpy_ok + [(cls, name) for name, cls in stubs.items()]
        try:
            with warnings.catch_warnings(), torch.serialization.safe_globals(allowed):
                warnings.simplefilter("ignore")
                return torch.load(path, map_location="cpu", weights_only=True), sorted(stubs)
        except Exception as e:  # noqa: BLE001 - torch raises many types for foreign or broken files
            message = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
            found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
            if found and found.group(1) not in stubs:
                names = [found.group(1)]
                continue
            blocked = re.search(r"GLOBAL (\S+) whose module (\S+) is blocked", message)
            if blocked:
                raise _refuse(path, f"global {blocked.group(1)}") from None
            first = message.strip().splitlines()[0][:160] if message.strip() else type(e).__name__
            if "TorchScript" in message:
                raise ClBenchError(
                    f"checkpoint {path} is a TorchScript archive, not a state dict; save the module's "
                    "state_dict() with safetensors or torch.save and pass that file"
                ) from None
            if "Weights only load failed" in message or "Unpickl" in type(e).__name__:
                why = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", message)
                raise ClBenchError(
                    f"checkpoint {path} refused: torch's weights-only loader rejects its pickled "
                    f"Python objects ({why.group(1).strip() if why else first}), which could run code "
                    "on load; convert it to safetensors (or a plain state dict) where you trust it"
                ) from None
            raise ClBenchError(
                f"checkpoint {path} is not a readable torch checkpoint ({type(e).__name__}: {first}); "
                "it may be truncated or corrupt: download or export it again"
            ) from None
    raise ClBenchError(
        f"checkpoint {path} names more than {_MAX_RETRIES} foreign classes; convert it to safetensors"
    )


# ------------------------------------------------------------------------------------ layouts


def flatten_tensors(obj: Any, prefix: str = "", depth: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor in nested string-keyed mappings, under dotted keys (``trunk.x``, ``heads.0.y``)."""
    out: dict[str, torch.Tensor] = {}
    if depth > 8 or not isinstance(obj, Mapping):
        return out
    for k, v in obj.items():
        if not isinstance(k, str):
            continue
        if isinstance(v, torch.Tensor):
            out[prefix + k] = v
        elif isinstance(v, Mapping):
            out.update(flatten_tensors(v, f"{prefix}{k}.", depth + 1))
    return out


def _tensors(obj: Any) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        return {}
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def model_state(obj: Any) -> tuple[dict[str, torch.Tensor], str]:
    """(flat state dict of the model in ``obj``, layout name); ({}, '') when nothing is found."""
    if not isinstance(obj, Mapping):
        return {}, ""
    vissl = _dig(obj, "classy_state_dict", "base_model", "model")
    if isinstance(vissl, Mapping):
        return flatten_tensors(vissl), "vissl"
    state = obj.get("state_dict")
    if isinstance(state, Mapping) and _tensors(state):
        if "pytorch-lightning_version" in obj or "hyper_parameters" in obj:
            return _tensors(state), "lightning"
        if "meta" in obj:
            return _tensors(state), "mmselfsup"
        return _tensors(state), "moco" if "arch" in obj or any(
            ".encoder_q." in k for k in state
        ) else "state_dict"
    model = obj.get("model")
    if isinstance(model, Mapping) and _tensors(model):
        return _tensors(model), "pixpro" if "opt" in obj else "model"
    for key in CONTAINER_KEYS[2:]:  # state_dict and model are handled above
        inner = obj.get(key)
        if isinstance(inner, Mapping) and _tensors(inner):
            return _tensors(inner), key
    return _tensors(obj), "plain"


_RESNET_LAYERS = ("layer1", "layer2", "layer3", "layer4")


def resnet_sequential_prefixes(keys: list[str]) -> dict[str, int]:
    """Prefixes under which a torchvision ResNet sits as ``nn.Sequential`` -> index of ``layer1``.

    Recognised when ``P0.weight`` (conv1) and ``P1.running_mean`` (bn1) exist and ``P<k>.0.conv1.weight``
    is the first residual block: k = 4 keeps relu (2) and max-pool (3), k = 3 had the max-pool removed.
    """
    keyset = set(keys)
    found: dict[str, int] = {}
    for key in keys:
        if key != "0.weight" and not key.endswith(".0.weight"):
            continue
        prefix = key[: -len("0.weight")]
        if f"{prefix}1.running_mean" not in keyset:
            continue
        for first in (4, 3):
            if all(f"{prefix}{first + i}.0.conv1.weight" in keyset for i in range(4)):
                found[prefix] = first
                break
    return found


def rename_resnet_sequential(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Give a Sequential-flattened ResNet its child names back (see ``resnet_sequential_prefixes``)."""
    prefixes = resnet_sequential_prefixes(list(state))
    if not prefixes:
        return dict(state), {}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        for prefix, first in prefixes.items():
            index, _, tail = key[len(prefix) :].partition(".")
            if key.startswith(prefix) and index.isdigit() and tail:
                names = {0: "conv1", 1: "bn1", **{first + i: layer for i, layer in enumerate(_RESNET_LAYERS)}}
                if int(index) in names:
                    key = f"{prefix}{names[int(index)]}.{tail}"
                    break
        out[key] = tensor
    return out, prefixes


@dataclass
class ReleasedCheckpoint:
    """A checkpoint's model tensors, the layout recognised, and what was done to read it."""

    state: dict[str, torch.Tensor]
    layout: str
    placeholders: list[str] = field(default_factory=list)  # pickled classes replaced by inert stubs
    renamed_sequential: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "placeholders": self.placeholders,
            "renamed_sequential": self.renamed_sequential,
        }


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; a truncated or corrupt file is a ClBenchError."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for bad headers/truncation
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
        why = f"{type(e).__name__}: {text[0][:160]}" if text and text[0] else type(e).__name__
        raise ClBenchError(
            f"checkpoint {path} is not a readable safetensors file ({why}); "
            "it may be truncated or corrupt: download or export it again"
        ) from None


def read_released(path: Path) -> ReleasedCheckpoint:
    """Read ``path`` (``.safetensors`` or a ``torch.save`` file) into a flat model state dict."""
    path = Path(path)
    if not path.exists():
        raise ClBenchError(f"checkpoint {path} does not exist; check the --checkpoint path")
    if not path.is_file():
        raise ClBenchError(f"checkpoint {path} is not a file; pass the checkpoint file itself")
    placeholders: list[str] = []
    if path.suffix == ".safetensors":
        obj: Any = read_safetensors(path)
    else:
        obj, placeholders = load_with_placeholders(path)
    state, layout = model_state(obj)
    if not state:
        kind = (
            f"a dict with keys {', '.join(map(str, list(obj)[:5]))}"
            if isinstance(obj, Mapping)
            else type(obj).__name__
        )
        raise ClBenchError(
            f"checkpoint {path} holds no state dict ({kind}); expected a dict of tensors, possibly under "
            "state_dict, model, classy_state_dict.base_model.model ..."
        )
    state, renamed = rename_resnet_sequential(state)
    return ReleasedCheckpoint(state, layout, placeholders, renamed)


def check_declared_layout(path: Path, dropped: list[str], layout: ReleasedWeights) -> None:
    """Every key the loader left out must be a head the method's release documents (``dropped``).

    Anything else means the file is not the released one (another architecture, another
    project's layout, a renamed key): loading it under that method would evaluate something else.
    """
    stray = [k for k in dropped if not any(k.startswith(p) for p in layout.dropped)]
    if stray:
        more = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
        heads = ", ".join(repr(p) for p in layout.dropped) or "none"
        raise ClBenchError(
            f"checkpoint {Path(path).name} is not in the released layout ({layout.source}): key "
            f"{stray[0]!r}{more} is neither an encoder key under {layout.encoder_prefix!r} nor one of the "
            f"documented heads ({heads}); for your own checkpoint use the generic method of that architecture"
        )


def read_released_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Drop-in for ``checkpoint.read_state_dict``: the flat tensors of any layout above."""
    return read_released(path).state
