"""``icl-pretrain``: train an ICL sequence model (``icl-gpt2``/``icl-lstm``/``icl-linear-rnn``) fresh.

What is trained depends on the task's train split:

- ICLL instances (``icll-dfa``): next-token cross-entropy over every position, the targets at
  the separator and at padding ignored (as the reference, berlino/seq_icl); each epoch visits the
  train instances in a seeded random order, ``batch_size`` at a time. ``length_window: k > 1``
  cuts the batches from windows of ``k * batch_size`` instances of that order, each sorted by
  length, and visits the batches in a seeded random order (:func:`length_bucketed_batches`):
  less padding, so a cheaper step on CPU, the same instances every epoch.
- regression prompts (``icl-linreg``): fresh prompts every step; loss = mean over positions of
  (ŷ_i − y_i)² (Garg et al.), an "epoch" being ``steps_per_epoch`` steps; optional curriculum as
  in the reference (``curriculum``): the active dimensions grow from ``dims_start`` by
  ``dims_inc`` and the points from ``points_start`` by ``points_inc`` every ``interval`` steps, up
  to the task's ``n_dims``/``n_points`` (unused coordinates of x are zero); ``regression_lr``
  replaces the recipe's ``lr`` there (one recipe serves both suites, and GPT-2 on regression
  prompts diverges at the lr that trains it fastest on ICLL: Garg et al. train at 1e-4).

Recipe fields used: ``epochs``, ``batch_size``, ``optimizer``, ``lr``, ``weight_decay``,
``momentum``, ``schedule`` (cosine/constant), ``warmup_epochs``; objective params below.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from cl_bench.components import register
from cl_bench.data.icl.dfa import IGNORE, DFASplit
from cl_bench.data.icl.linreg import LinRegSampler
from cl_bench.errors import ClBenchError
from cl_bench.methods.objective import Objective
from cl_bench.methods.trainer import FitLog, build_optimizer, clip_gradients, fit, lr_at_step
from cl_bench.specs import TrainRecipe
from cl_bench.params import Strict, validate_params


class Curriculum(Strict):

    dims_start: int = Field(default=2, ge=1)
    dims_inc: int = Field(default=1, ge=0)
    points_start: int = Field(default=5, ge=2)
    points_inc: int = Field(default=2, ge=0)
    interval: int = Field(default=100, ge=1)

    def at(self, step: int, n_dims: int, n_points: int) -> tuple[int, int]:
        k = step // self.interval
        return (min(n_dims, self.dims_start + k * self.dims_inc),
                min(n_points, self.points_start + k * self.points_inc))


class ICLPretrainParams(Strict):

    max_steps: int | None = Field(default=None, ge=1)  # caps either kind of run
    grad_clip: float = Field(default=1.0, gt=0)
    steps_per_epoch: int = Field(default=100, ge=1)  # regression only
    length_window: int = Field(default=1, ge=1)  # icll only: batches cut from windows of this many batches sorted by length
    curriculum: Curriculum | None = None  # regression only
    regression_lr: float | None = Field(default=None, gt=0)  # regression only: replaces the recipe's lr


@dataclass
class ICLTrainCard:
    objective: str
    kind: str  # "icll" or "regression"
    steps: int
    sequences_seen: int
    first_loss: float
    final_loss: float  # mean over the last 10% of steps
    seconds: float
    seconds_per_step: float
    curriculum_end: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fit(model: torch.nn.Module, recipe: TrainRecipe, p: ICLPretrainParams, total: int, per_epoch: int,
         batches: Any, loss: Any, progress: bool, desc: str, views: Any = None) -> tuple[FitLog, float, float]:
    """The run on :func:`~cl_bench.methods.trainer.fit` (the recipe's optimizer and schedule,
    clipping, a finite loss at every step); returns the log, the first and the final loss (mean
    over the last 10% of steps)."""
    params = [q for q in model.parameters() if q.requires_grad]
    warmup = min(recipe.warmup_epochs * per_epoch, total)
    model.train()
    log = fit(
        build_optimizer(params, recipe), total=total, batches=batches, views=views, loss=loss,
        lr_at=lambda step: lr_at_step(step, total, warmup, recipe), before_step=[clip_gradients(params, p.grad_clip)],
        check_step=lambda step, value: f"icl-pretrain: the loss became {value} at step {step}; lower the lr",
        progress=desc if progress else None,
    )
    model.eval()
    losses = log.losses()
    tail = losses[-max(1, len(losses) // 10):]
    return log, losses[0], sum(tail) / len(tail)


def length_bucketed_batches(order: list[int], lengths: list[int], batch_size: int, window: int,
                            gen: torch.Generator) -> list[list[int]]:
    """``order`` cut into batches of ``batch_size``; with ``window`` > 1 each run of ``window *
    batch_size`` instances is sorted by length (stable) before cutting, and the batches are then
    shuffled with ``gen`` (so a batch holds instances of similar length)."""
    if window == 1:
        return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
    out: list[list[int]] = []
    span = window * batch_size
    for w in range(0, len(order), span):
        chunk = sorted(order[w : w + span], key=lambda i: lengths[i])
        out += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    return [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]


def train_icll(model: Any, recipe: TrainRecipe, split: DFASplit, p: ICLPretrainParams, seed: int,
               device: torch.device, progress: bool) -> ICLTrainCard:
    gen = torch.Generator().manual_seed(seed)
    per_epoch = math.ceil(len(split) / recipe.batch_size)
    total = per_epoch * recipe.epochs if p.max_steps is None else min(p.max_steps, per_epoch * recipe.epochs)

    lengths = [len(s) for s in split.sequences]

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(split), generator=gen).tolist()
        for idx in length_bucketed_batches(order, lengths, recipe.batch_size, p.length_window, gen):
            yield split.batch(idx)

    def loss(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        logits = model.token_logits(inputs.to(device))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.to(device).reshape(-1),
                               ignore_index=IGNORE)

    log, first, final = _fit(model, recipe, p, total, per_epoch, batches, loss, progress, "icl-pretrain (icll)")
    return ICLTrainCard("icl-pretrain", "icll", log.steps, log.steps * recipe.batch_size, first, final,
                        round(log.wall_s, 3), round(log.wall_s / max(1, log.steps), 4))


def train_regression(model: Any, recipe: TrainRecipe, sampler: LinRegSampler, p: ICLPretrainParams, seed: int,
                     device: torch.device, progress: bool) -> ICLTrainCard:
    gen = torch.Generator().manual_seed(seed)
    total = recipe.epochs * p.steps_per_epoch if p.max_steps is None else min(p.max_steps, recipe.epochs * p.steps_per_epoch)
    shape = {"n_dims": sampler.n_dims, "n_points": sampler.n_points}

    def prompts(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if p.curriculum is not None:
            shape["n_dims"], shape["n_points"] = p.curriculum.at(step, sampler.n_dims, sampler.n_points)
        xs, ys = sampler.sample(gen, recipe.batch_size, n_points=shape["n_points"], n_dims_active=shape["n_dims"])
        return xs.to(device), ys.to(device)

    def loss(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        xs, ys = batch
        return (model.regress(xs, ys).float() - ys).square().mean()

    steps = p.steps_per_epoch  # an "epoch" of fresh prompts: the step indices, each sampled as it runs
    if p.regression_lr is not None:
        recipe = recipe.model_copy(update={"lr": p.regression_lr})
    log, first, final = _fit(model, recipe, p, total, steps, lambda e: range(e * steps, (e + 1) * steps), loss,
                             progress, "icl-pretrain (regression)", views=prompts)
    return ICLTrainCard("icl-pretrain", "regression", log.steps, log.steps * recipe.batch_size, first, final,
                        round(log.wall_s, 3), round(log.wall_s / max(1, log.steps), 4), dict(shape))


@register("objective", "icl-pretrain", params=ICLPretrainParams)
class ICLPretrain(Objective):
    """Trains through its own ``train_model`` (not the image trainer); see the module docstring."""

    @staticmethod
    def train_model(model: Any, recipe: TrainRecipe, split: Any, num_classes: int, seed: int,
                    device: torch.device, progress: bool) -> ICLTrainCard:
        p = validate_params(ICLPretrainParams, recipe.params, "train.params (icl-pretrain)")
        if isinstance(split, DFASplit):
            return train_icll(model, recipe, split, p, seed, device, progress)
        if isinstance(split, LinRegSampler):
            return train_regression(model, recipe, split, p, seed, device, progress)
        raise ClBenchError("icl-pretrain trains on an ICL dataset (icll-dfa or icl-linreg); this task's data is not one")
