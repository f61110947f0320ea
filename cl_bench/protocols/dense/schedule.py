"""What the detection and segmentation fine-tuning loops share: SGD with detectron2/mmseg
parameter groups, per-iteration learning rates, a seeded index stream and the loop guard.

- detectron2 ``WarmupMultiStepLR``: ``lr * warmup(it) * gamma ** (#steps <= it)``, with linear
  warmup ``factor * (1 - a) + a`` for ``a = it / warmup_iters`` (``warmup_factor`` = 1/1000).
- mmseg ``PolyLR``: ``(lr - min_lr) * (1 - it / iters) ** power + min_lr``, after mmcv's linear
  warmup ``lr * (r + (1 - r) * it / warmup_iters)`` (``warmup_ratio`` r).
- Weight decay is not applied to normalisation parameters (detectron2 ``WEIGHT_DECAY_NORM: 0``).
- :func:`adamw`: mmcv's ``DefaultOptimizerConstructor`` with DenseCLIP's ``paramwise_cfg``
  (``custom_keys``: ``backbone`` lr x ``backbone_lr_mult``; ``norm`` decay x 0): the backbone's
  parameters get the multiplied lr (their group's ``base_lr``); of the others, a parameter whose
  name contains ``norm`` gets no weight decay. mmcv matches the longest key first, so backbone
  norm parameters keep their decay, as there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cl_bench.budget import SMOKE_DENSE_BATCH, Budget, Budgeted, first_test, steps_of
from cl_bench.errors import ClBenchError

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float, weight_decay_norm: float = 0.0
        ) -> torch.optim.SGD:
    """SGD over the trainable parameters; norm-layer parameters get ``weight_decay_norm``."""
    norm_ids = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    seen: set[int] = set()
    normal, norm = [], []
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (norm if id(p) in norm_ids else normal).append(p)
    groups = [{"params": normal, "weight_decay": weight_decay}]
    if norm:
        groups.append({"params": norm, "weight_decay": weight_decay_norm})
    if not normal and not norm:
        raise ClBenchError("the model has no trainable parameters (everything frozen?): nothing to fine-tune")
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def adamw(model: nn.Module, lr: float, weight_decay: float, backbone: set[int], backbone_lr_mult: float = 1.0
          ) -> torch.optim.AdamW:
    """AdamW over the trainable parameters in mmcv's groups (module doc); ``backbone``: the ids of the
    backbone's parameters. Each group carries its ``base_lr`` for :func:`poly_lr`."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():  # shared parameters once, under their first name
        if not p.requires_grad:
            continue
        if id(p) in backbone:
            key = (lr * backbone_lr_mult, weight_decay)
        else:
            key = (lr, 0.0 if "norm" in name else weight_decay)
        groups.setdefault(key, []).append(p)
    if not groups:
        raise ClBenchError("the model has no trainable parameters (everything frozen?): nothing to fine-tune")
    return torch.optim.AdamW([{"params": ps, "lr": g_lr, "base_lr": g_lr, "weight_decay": wd}
                              for (g_lr, wd), ps in groups.items()], lr=lr)


def multistep_lr(it: int, lr: float, steps: Sequence[int], gamma: float, warmup_iters: int,
                 warmup_factor: float) -> float:
    """detectron2 WarmupMultiStepLR (linear warmup) at iteration ``it`` (0-based)."""
    factor = 1.0
    if it < warmup_iters:
        a = it / warmup_iters
        factor = warmup_factor * (1 - a) + a
    return lr * factor * gamma ** sum(1 for s in steps if s <= it)


def poly_lr(it: int, total: int, lr: float, power: float, min_lr: float, warmup_iters: int = 0,
            warmup_ratio: float = 0.001) -> float:
    """mmseg PolyLR (optionally after mmcv's linear warmup from ``lr * warmup_ratio``)."""
    base = (lr - min_lr) * (1 - it / max(1, total)) ** power + min_lr
    if it < warmup_iters:
        a = it / warmup_iters
        base *= warmup_ratio * (1 - a) + a
    return base


def index_stream(n: int, seed: int) -> Iterator[int]:
    """Endless epoch-wise shuffled indices ``0..n-1`` (a new permutation per epoch), seeded."""
    if n < 1:
        raise ClBenchError("the training split is empty: nothing to fine-tune on")
    rng = np.random.default_rng(seed)
    while True:
        yield from (int(i) for i in rng.permutation(n))


def nonfinite_message(what: str, lr: float) -> Callable[[int, float], str]:
    """The loop's message for a non-finite loss at an iteration (``fit``'s ``check_step``)."""

    def message(it: int, value: float) -> str:
        return f"{what} loss became {value} at iteration {it + 1}; lower the task's lr (now {lr:g}) or add warmup"

    return message


def window_means(losses: list[float], iterations: int) -> list[float]:
    """The loss curve of a run: means over windows of ``iterations // 20`` iterations (at least 1),
    the last window possibly shorter, rounded to 5 decimals."""
    every = max(1, iterations // 20)
    return [round(float(np.mean(losses[i : i + every])), 5) for i in range(0, len(losses), every)]


def dense_budget(params: Any, data: Any, budget: Budget) -> Budgeted:
    """Detection and segmentation under a reduced budget: the first N test images (the dataset's
    own order: the image set file, the JSON's ``images``, the sorted city folders); under
    ``--smoke`` the first :data:`~cl_bench.budget.SMOKE_TRAIN_STEPS` iterations of the task's own
    schedule (its warmup and base LR; steps past the end dropped) with at most
    :data:`~cl_bench.budget.SMOKE_DENSE_BATCH` images each. Image sizes, augmentation, the model
    and the metric are the task's."""
    reduced = first_test("test images")(params, data, budget)
    if budget.train_steps is None:
        return reduced
    steps = min(params.iterations, budget.train_steps)
    batch = min(params.batch_size, SMOKE_DENSE_BATCH)
    update: dict[str, Any] = {"iterations": steps, "batch_size": batch}
    if hasattr(params, "lr_steps"):
        update["lr_steps"] = [s for s in params.lr_steps if s < steps]
    if getattr(params, "precise_bn_iters", 0) > steps:  # PreciseBN's statistics over as many batches
        update["precise_bn_iters"] = steps
        reduced.applied["precise_bn"] = steps_of(steps, params.precise_bn_iters, "PreciseBN batches")
    reduced.params = type(params).model_validate({**params.model_dump(), **update})
    reduced.applied["iterations"] = steps_of(steps, params.iterations)
    reduced.applied["batch"] = f"{batch} images per iteration (task: {params.batch_size})"
    reduced.train_steps = steps
    return reduced
