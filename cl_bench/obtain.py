"""Obtain a method's model: load a checkpoint, or train fresh (cached), or build it as is."""

from __future__ import annotations

import copy
import inspect
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cl_bench import components
from cl_bench.atomic import write_atomic
from cl_bench.cache import Cache
from cl_bench.data.image.types import ImageClassificationData
from cl_bench.errors import ClBenchError
from cl_bench.finite import check_module
from cl_bench.models.interfaces.hooks import (
    check_provides,
    checkpoint_hook,
    data_arch_inputs,
    fingerprint_covers_arch,
    images_fingerprint,
    members_key,
    needs_labels,
    own_checkpoint_loader,
    own_trainer,
    preloaded_report,
)
from cl_bench.registry import Registry
from cl_bench.specs import ArchRef, DatasetRef, MethodSpec, canonical_hash

TRAINER_VERSION = "1"  # bump when the trainer changes what a recipe produces


@dataclass
class ObtainedModel:
    model: nn.Module
    fingerprint: str
    source: str  # trained | checkpoint | untrained | parameter-free
    recipe_hash: str | None = None
    checkpoint: dict[str, Any] | None = None
    card: dict[str, Any] | None = None
    train_s: float = 0.0
    reused: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def arch_inputs(data: Any) -> dict[str, Any]:
    """What an arch builder needs to know about the data (image archs: channels and size)."""
    if isinstance(data, ImageClassificationData):
        return {"in_channels": data.in_channels, "image_size": tuple(data.image_size)}
    return data_arch_inputs(data)


@dataclass
class MemberSource:
    """What an arch made of other methods' models (contrastive decoding's expert and amateur)
    needs to obtain them as the run obtains its own model: the run's cache and data root, and
    the registry its method names resolve in. Handed to an arch builder that declares a
    ``members`` parameter."""

    cache: Cache
    data_root: Path | None = None
    registry: Registry | None = None
    seed: int = 0  # the run's seed: members without their own seed train with it
    smoke: bool = False  # --smoke: members' fresh recipes are cut as the run's own

    def method(self, name: str) -> MethodSpec:
        # no registry handed over: read the roots now ($CLBENCH_REGISTRY_PATH as it is), never a cached one
        return (self.registry or Registry()).method(name)

    def obtain(self, method: MethodSpec, data: Any, seed: int, checkpoint: Path | None = None) -> ObtainedModel:
        """The member, on CPU (loaded, trained and cached, or built), as :func:`obtain_model` does."""
        return obtain_model(method, data, seed=seed, device=torch.device("cpu"), cache=self.cache,
                            checkpoint=checkpoint, data_root=self.data_root, registry=self.registry,
                            smoke=self.smoke)


def build_encoder(method: MethodSpec, data: Any, members: MemberSource | None = None) -> nn.Module:
    """The method's arch built for ``data``; an arch made of other methods' models gets ``members``."""
    builder = components.get("arch", method.arch.name)
    wants_members = "members" in inspect.signature(builder).parameters
    extra = {"members": members} if wants_members and members is not None else {}
    return builder(method.arch.params, **arch_inputs(data), **extra)


def with_arch_params(method: MethodSpec, overrides: dict[str, Any]) -> MethodSpec:
    """``method`` with its arch params updated by ``overrides`` (``--arch-param KEY=VALUE``; a dotted
    key such as ``kwargs.drop_path_rate`` sets a nested value)."""
    if not overrides:
        return method
    params = copy.deepcopy(method.arch.params)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            if not isinstance(node.get(part, {}), dict):
                raise ClBenchError(f"--arch-param {key}: {part} is not a mapping in arch {method.arch.name}'s params")
            node = node.setdefault(part, {})
        node[leaf] = value
    return method.model_copy(update={"arch": ArchRef(name=method.arch.name, params=params)})


def resolve_checkpoint(method: MethodSpec, path: Path) -> tuple[MethodSpec, Path | None]:
    """Let the arch read what it needs from a checkpoint before it is built.

    An arch builder may carry ``from_checkpoint(path, params) -> (params, weights)``: e.g. a timm or
    open_clip hub directory names its architecture in its config, a Hugging Face directory becomes
    the builder's ``path``. ``weights`` is the file to load afterwards, or None when the builder
    reads the weights itself (its ``checkpoint_report`` says what it read).
    """
    hook = checkpoint_hook(components.get("arch", method.arch.name))
    if hook is None:
        return method, path
    params, weights = hook(path, copy.deepcopy(method.arch.params))
    return method.model_copy(update={"arch": ArchRef(name=method.arch.name, params=params)}), weights


def _load_checkpoint(encoder: nn.Module, path: Path, method: MethodSpec) -> dict[str, Any]:
    """Weights from ``path`` through the model's own loader (HF / open_clip formats) or the generic one."""
    from cl_bench.models.weights.checkpoint import load_into

    own_loader = own_checkpoint_loader(encoder)
    if own_loader is None:
        return load_into(encoder, path, method.released).to_json()
    if "layout" in inspect.signature(own_loader).parameters:
        return own_loader(path, layout=method.released)
    return own_loader(path)


def recipe_hash(method: MethodSpec) -> str | None:
    return canonical_hash(method.train.model_dump(mode="json")) if method.train else None


def _objective_revision(objective: str) -> dict[str, int]:
    """``{"objective_version": v}`` for an objective past version 1 (earlier cache keys stay as they were)."""
    from cl_bench.methods.objective import objective_version

    v = objective_version(objective)
    return {"objective_version": v} if v != 1 else {}


def trainer_for(objective: str) -> Any:
    """The objective's own ``train_model`` if it has one (non-image models), else the image trainer."""
    cls = components.get("objective", objective)
    own = own_trainer(cls)
    if own is not None:
        return own
    from cl_bench.methods.trainer import train_encoder

    return train_encoder


def _train_split_key(objective: str, split: Any) -> str:
    """What of the training split a checkpoint depends on: only the images (dense splits) for a label-free objective."""
    if needs_labels(components.get("objective", objective)):
        return split.fingerprint
    return images_fingerprint(split)


def _training_data(
    ref: DatasetRef | None, task_data: ImageClassificationData, data_root: Path | None
) -> ImageClassificationData:
    if ref is None:
        return task_data
    loader = components.get("dataset", ref.name)
    return loader(ref.params, data_root)


def obtain_model(
    method: MethodSpec,
    data: Any,
    *,
    seed: int,
    device: torch.device,
    cache: Cache,
    checkpoint: Path | None = None,
    data_root: Path | None = None,
    progress: bool = False,
    registry: Registry | None = None,
    smoke: bool = False,
) -> ObtainedModel:
    """The method's model: ``checkpoint`` (else the method's own) loaded, else trained fresh by its
    recipe (cached by recipe, arch, training data and seed), else built as is. ``smoke``
    (``--smoke``): a fresh recipe trains for one epoch without warmup — its own cache entry."""
    from cl_bench.models.weights.fingerprint import model_fingerprint

    seed_everything(seed)
    ckpt = checkpoint or (Path(method.checkpoint) if method.checkpoint else None)
    weights = None
    if ckpt is not None:
        method, weights = resolve_checkpoint(method, Path(ckpt))
    encoder = build_encoder(method, data, MemberSource(cache, data_root, registry, seed, smoke))
    check_provides(encoder, method.provides, method.id)
    has_params = any(True for _ in encoder.state_dict())
    # weights the builder read itself: a Hugging Face directory in its params, a bundled model
    preloaded = preloaded_report(encoder)

    if ckpt is not None:
        if not has_params:
            raise ClBenchError(f"method '{method.id}' has no weights: it cannot load a checkpoint")
        report = _load_checkpoint(encoder, weights, method) if weights is not None else preloaded
        got = ObtainedModel(encoder, "", "checkpoint", checkpoint=report)
    elif method.train is not None and method.train.epochs > 0:
        if smoke:
            one_epoch = method.train.model_copy(update={"epochs": 1, "warmup_epochs": 0})
            method = method.model_copy(update={"train": one_epoch})
        got = _train_cached(method, encoder, data, seed, device, cache, data_root, progress)
    elif preloaded is not None:
        got = ObtainedModel(encoder, "", "checkpoint", checkpoint=preloaded)
    else:
        got = ObtainedModel(encoder, "", "untrained" if has_params else "parameter-free")

    check_module(encoder, f"method '{method.id}' ({got.source}{f' from {ckpt}' if ckpt is not None else ''})")
    encoder.to(device).eval()
    # the arch params name the model when weights alone do not: parameter-free encoders, and
    # scoring rules over other models' weights (contrastive decoding, DoLa, LOL: same weights,
    # different scores)
    by_arch = not has_params or fingerprint_covers_arch(encoder)
    extra = canonical_hash(method.arch.model_dump(mode="json")) if by_arch else ""
    got.fingerprint = model_fingerprint(encoder, extra=extra)
    return got


def _train_cached(
    method: MethodSpec,
    encoder: nn.Module,
    data: Any,
    seed: int,
    device: torch.device,
    cache: Cache,
    data_root: Path | None,
    progress: bool,
) -> ObtainedModel:
    recipe = method.train
    assert recipe is not None
    train_data = _training_data(recipe.data, data, data_root)
    rhash = recipe_hash(method)
    key = canonical_hash({
        "recipe": rhash,
        "arch": method.arch.model_dump(mode="json"),
        "arch_inputs": {k: list(v) if isinstance(v, tuple) else v for k, v in arch_inputs(data).items()},
        "train_split": _train_split_key(recipe.objective, train_data.train),
        "seed": seed,
        "trainer": TRAINER_VERSION,
        **_objective_revision(recipe.objective),
        # an arch that starts from another method's weights: keyed on those weights
        **({"members": members_key(encoder)} if members_key(encoder) else {}),
    })
    folder = cache.checkpoint_dir(key)
    weights, card_path = folder / "encoder.safetensors", folder / "card.json"
    with cache.lock(folder / "train"):
        card = load_cached_checkpoint(encoder, folder, key)
        if card is not None:
            return ObtainedModel(encoder, "", "trained", rhash, card=card, reused=True)
        t0 = time.perf_counter()
        seed_everything(seed)
        encoder.to(device)
        train_card = trainer_for(recipe.objective)(
            encoder, recipe, train_data.train, getattr(train_data, "num_classes", 0), seed, device, progress
        )
        train_s = time.perf_counter() - t0
        check_module(encoder, f"method '{method.id}' trained with seed {seed}")  # diverged: never cached
        card = {
            "method": method.id,
            "recipe": recipe.model_dump(mode="json"),
            "recipe_hash": rhash,
            "cache_key": key,
            "arch": method.arch.model_dump(mode="json"),
            "train_data": train_data.name,
            "train_data_fingerprint": train_data.train.fingerprint,
            "seed": seed,
            **train_card.to_json(),
        }
        state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".encoder.safetensors.tmp"
        save_file(state, str(tmp))
        tmp.replace(weights)
        write_atomic(card_path, json.dumps(card, indent=2))
        return ObtainedModel(encoder, "", "trained", rhash, card=card, train_s=train_s)


def load_cached_checkpoint(encoder: nn.Module, folder: Path, key: str) -> dict[str, Any] | None:
    """The card of a complete, intact cache entry, with its weights loaded into ``encoder``; None
    when there is no entry. A broken entry (truncated or foreign weights, an unreadable card or
    one for another key, non-finite weights) is reported on stderr, removed, and None returned,
    so the caller rebuilds it instead of failing on it forever."""
    from cl_bench.bounded_io import MAX_CARD_BYTES, read_json

    weights, card_path = folder / "encoder.safetensors", folder / "card.json"
    if not weights.exists() and not card_path.exists():
        return None
    try:
        card = read_json(card_path, MAX_CARD_BYTES, "cache card")
        if not isinstance(card, dict) or card.get("cache_key") != key:
            raise ClBenchError(f"cache card {card_path} does not describe entry {key[:12]}")
        try:
            state = load_file(str(weights))
        except Exception as e:  # noqa: BLE001 - safetensors raises several types for truncation
            raise ClBenchError(f"cached weights {weights} are unreadable ({type(e).__name__})") from None
        try:
            encoder.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ClBenchError(f"cached weights {weights} do not fit the arch ({str(e).splitlines()[0]})") from None
        check_module(encoder, f"cached weights {weights}")
    except ClBenchError as e:
        print(f"clbench: warning: corrupt checkpoint cache entry ({e}); rebuilding it", file=sys.stderr)
        for f in (weights, card_path):
            f.unlink(missing_ok=True)
        return None
    return card
