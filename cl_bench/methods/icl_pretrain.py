"""``icl-pretrain``: train an ICL sequence model (``icl-gpt2``/``icl-lstm``/``icl-linear-rnn``) fresh.

What is trained depends on the task's train split:

- ICLL instances (``icll-dfa``): next-token cross-entropy over every position, the targets at
  the separator and at padding ignored (as the reference, berlino/seq_icl); each epoch visits the
  train instances in a seeded random order, ``batch_size`` at a time.
- regression prompts (``icl-linreg``): fresh prompts every step; loss = mean over positions of
  (ŷ_i − y_i)² (Garg et al.), an "epoch" being ``steps_per_epoch`` steps; optional curriculum as
  in the reference (``curriculum``): the active dimensions grow from ``dims_start`` by
  ``dims_inc`` and the points from ``points_start`` by ``points_inc`` every ``interval`` steps, up
  to the task's ``n_dims``/``n_points`` (unused coordinates of x are zero).

Recipe fields used: ``epochs``, ``batch_size``, ``optimizer``, ``lr``, ``weight_decay``,
``momentum``, ``schedule`` (cosine/constant), ``warmup_epochs``; objective params below.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from cl_bench.components import register
from cl_bench.data.dfa import IGNORE, DFASplit
from cl_bench.data.linreg import LinRegSampler
from cl_bench.errors import ClBenchError
from cl_bench.methods.objective import Objective
from cl_bench.methods.trainer import build_optimizer, lr_at_step
from cl_bench.specs import TrainRecipe, validate_params


class Curriculum(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dims_start: int = Field(default=2, ge=1)
    dims_inc: int = Field(default=1, ge=0)
    points_start: int = Field(default=5, ge=2)
    points_inc: int = Field(default=2, ge=0)
    interval: int = Field(default=100, ge=1)

    def at(self, step: int, n_dims: int, n_points: int) -> tuple[int, int]:
        k = step // self.interval
        return (min(n_dims, self.dims_start + k * self.dims_inc),
                min(n_points, self.points_start + k * self.points_inc))


class ICLPretrainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int | None = Field(default=None, ge=1)  # caps either kind of run
    grad_clip: float = Field(default=1.0, gt=0)
    steps_per_epoch: int = Field(default=100, ge=1)  # regression only
    curriculum: Curriculum | None = None  # regression only


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


class _Loop:
    """Optimiser, schedule, clipping, loss log and progress bar shared by both kinds of run."""

    def __init__(self, model: torch.nn.Module, recipe: TrainRecipe, p: ICLPretrainParams, total: int,
                 per_epoch: int, progress: bool, desc: str) -> None:
        self.params = [q for q in model.parameters() if q.requires_grad]
        self.opt = build_optimizer(self.params, recipe)
        self.recipe, self.p, self.total = recipe, p, total
        self.warmup = min(recipe.warmup_epochs * per_epoch, total)
        self.losses: list[float] = []
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step")

    def step(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise ClBenchError(f"icl-pretrain: the loss became {float(loss)} at step {len(self.losses)}; lower the lr")
        for g in self.opt.param_groups:
            g["lr"] = lr_at_step(len(self.losses), self.total, self.warmup, self.recipe)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.p.grad_clip)
        self.opt.step()
        self.losses.append(float(loss.detach()))
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{self.losses[-1]:.3f}")

    def done(self) -> bool:
        return len(self.losses) >= self.total

    def close(self) -> tuple[float, float]:
        if self.bar is not None:
            self.bar.close()
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return self.losses[0], sum(tail) / len(tail)


def train_icll(model: Any, recipe: TrainRecipe, split: DFASplit, p: ICLPretrainParams, seed: int,
               device: torch.device, progress: bool) -> ICLTrainCard:
    gen = torch.Generator().manual_seed(seed)
    per_epoch = math.ceil(len(split) / recipe.batch_size)
    total = per_epoch * recipe.epochs if p.max_steps is None else min(p.max_steps, per_epoch * recipe.epochs)
    loop = _Loop(model, recipe, p, total, per_epoch, progress, "icl-pretrain (icll)")
    t0 = time.perf_counter()
    model.train()
    while not loop.done():
        order = torch.randperm(len(split), generator=gen).tolist()
        for b in range(0, len(order), recipe.batch_size):
            if loop.done():
                break
            inputs, targets = split.batch(order[b : b + recipe.batch_size])
            logits = model.token_logits(inputs.to(device))
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.to(device).reshape(-1),
                                   ignore_index=IGNORE)
            loop.step(loss)
    model.eval()
    first, final = loop.close()
    seconds = time.perf_counter() - t0
    return ICLTrainCard("icl-pretrain", "icll", len(loop.losses), len(loop.losses) * recipe.batch_size, first, final,
                        round(seconds, 3), round(seconds / max(1, len(loop.losses)), 4))


def train_regression(model: Any, recipe: TrainRecipe, sampler: LinRegSampler, p: ICLPretrainParams, seed: int,
                     device: torch.device, progress: bool) -> ICLTrainCard:
    gen = torch.Generator().manual_seed(seed)
    total = recipe.epochs * p.steps_per_epoch if p.max_steps is None else min(p.max_steps, recipe.epochs * p.steps_per_epoch)
    loop = _Loop(model, recipe, p, total, p.steps_per_epoch, progress, "icl-pretrain (regression)")
    t0 = time.perf_counter()
    dims, points = sampler.n_dims, sampler.n_points
    model.train()
    while not loop.done():
        if p.curriculum is not None:
            dims, points = p.curriculum.at(len(loop.losses), sampler.n_dims, sampler.n_points)
        xs, ys = sampler.sample(gen, recipe.batch_size, n_points=points, n_dims_active=dims)
        xs, ys = xs.to(device), ys.to(device)
        loss = (model.regress(xs, ys).float() - ys).square().mean()
        loop.step(loss)
    model.eval()
    first, final = loop.close()
    seconds = time.perf_counter() - t0
    return ICLTrainCard("icl-pretrain", "regression", len(loop.losses), len(loop.losses) * recipe.batch_size, first,
                        final, round(seconds, 3), round(seconds / max(1, len(loop.losses)), 4),
                        {"n_dims": dims, "n_points": points})


@register("objective", "icl-pretrain")
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
