"""The one image trainer: fits an encoder with a registered objective and a ``TrainRecipe``.

Per step: a seeded shuffle picks the batch, the objective's ``n_views`` augmented views are
made on the device, the objective returns a scalar loss, the optimizer (adam | adamw | sgd)
steps with the per-step learning rate (linear warmup, then cosine to 0 or constant).
Heads the objective owns are discarded; only the encoder is trained in place.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from cl_bench import components
from cl_bench.data.types import ArrayImageSplit, ImageSplit
from cl_bench.errors import ClBenchError
from cl_bench.methods.augment import Augmenter
from cl_bench.methods.objective import Objective
from cl_bench.specs import TrainRecipe

ON_DEVICE_MAX_BYTES = 2 * 1024**3  # a pre-loaded split up to this size is moved to the device once


@dataclass
class TrainCard:
    """What a training run did: goes into the checkpoint's card.json."""

    objective: str
    epochs: int
    steps: int
    loss_curve: list[float] = field(default_factory=list)  # mean loss per epoch
    wall_s: float = 0.0
    images_per_s: float = 0.0  # source images (not views) per second
    n_train: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lr_at_step(step: int, total: int, warmup: int, recipe: TrainRecipe) -> float:
    """Learning rate of ``step`` (0-based): linear warmup over ``warmup`` steps, then cosine|constant."""
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    if recipe.schedule == "constant":
        return recipe.lr
    progress = (step - warmup) / max(1, total - warmup)
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(params: list[nn.Parameter], recipe: TrainRecipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params``."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    cls = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def build_objective(recipe: TrainRecipe, embed_dim: int, num_classes: int, seed: int) -> Objective:
    """Instantiate the recipe's objective (head init seeded; global RNG untouched)."""
    cls = components.get("objective", recipe.objective)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            objective = cls(embed_dim=embed_dim, num_classes=num_classes, **recipe.params)
        except TypeError as e:  # objectives that do not validate their params themselves
            raise ClBenchError(f"train.params of objective '{recipe.objective}': {e}") from None
    if objective.needs_labels and num_classes < 1:
        raise ClBenchError(f"objective '{recipe.objective}' needs labels: train on a labelled dataset")
    return objective


def embed_dim_of(encoder: nn.Module, sample: torch.Tensor) -> int:
    """``encoder.embed_dim``, or the width of its output on one sample."""
    dim = getattr(encoder, "embed_dim", None)
    if isinstance(dim, int):
        return dim
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        dim = int(encoder(sample[:1]).shape[-1])
    encoder.train(was_training)
    return dim


class _Batches:
    """Seeded, shuffled batches of (images, labels) on the device; drop_last when n > batch."""

    def __init__(self, split: ImageSplit, batch_size: int, device: torch.device, gen: torch.Generator) -> None:
        self.n = len(split)
        self.batch = min(batch_size, self.n)
        self.steps = self.n // self.batch
        self.device, self.gen = device, gen
        self.images: torch.Tensor | None = None
        self.labels = torch.as_tensor(split.labels, dtype=torch.long)
        if isinstance(split, ArrayImageSplit):
            images = split.tensor()
            if device.type != "cpu" and images.numel() * images.element_size() <= ON_DEVICE_MAX_BYTES:
                images, self.labels = images.to(device), self.labels.to(device)
            self.images = images
        else:
            self.loader = DataLoader(split, batch_size=self.batch, shuffle=True, drop_last=True, generator=gen)

    def first(self) -> torch.Tensor:
        return self.images[:1] if self.images is not None else self.loader.dataset[0][0][None]

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.images is None:
            for x, y in self.loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        order = torch.randperm(self.n, generator=self.gen)
        for s in range(self.steps):
            idx = order[s * self.batch : (s + 1) * self.batch].to(self.images.device)
            x, y = self.images[idx], self.labels[idx]
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def train_encoder(
    encoder: nn.Module,
    recipe: TrainRecipe,
    split: ImageSplit,
    num_classes: int,
    seed: int,
    device: torch.device,
    progress: bool = False,
) -> TrainCard:
    """Train ``encoder`` in place on ``split`` with ``recipe``; leaves it in eval mode."""
    if len(split) < 2:
        raise ClBenchError(f"the training split has {len(split)} image(s): need at least 2")
    augment = Augmenter.from_params(recipe.augment)
    gen = torch.Generator().manual_seed(seed)  # shuffling
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1)  # augmentations, drawn on the device
    data = _Batches(split, recipe.batch_size, device, gen)
    encoder.to(device)
    objective = build_objective(recipe, embed_dim_of(encoder, data.first().to(device)), num_classes, seed)
    objective.to(device)
    params = [p for p in [*encoder.parameters(), *objective.parameters()] if p.requires_grad]
    if not params:
        raise ClBenchError("the encoder and objective have no trainable parameters: nothing to train")
    opt = build_optimizer(params, recipe)
    total = data.steps * recipe.epochs
    warmup = min(recipe.warmup_epochs * data.steps, total)

    card = TrainCard(recipe.objective, recipe.epochs, 0, n_train=data.n)
    bar = _progress_bar(total, recipe.objective, progress)
    encoder.train()
    objective.train()
    t0 = time.perf_counter()
    step = 0
    for epoch in range(recipe.epochs):
        loss_sum = torch.zeros((), device=device)
        for x, y in data.epoch():
            views = [augment(x, aug_gen) for _ in range(objective.n_views)]
            loss = objective(encoder, views, y)
            for g in opt.param_groups:
                g["lr"] = lr_at_step(step, total, warmup, recipe)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            step += 1
            if bar is not None:
                bar.update(1)
        mean_loss = float(loss_sum) / max(1, data.steps)
        if not math.isfinite(mean_loss):
            raise ClBenchError(
                f"training loss of '{recipe.objective}' became {mean_loss} in epoch {epoch + 1}; "
                f"lower train.lr (now {recipe.lr:g}) or add warmup_epochs"
            )
        card.loss_curve.append(mean_loss)
        if bar is not None:
            bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.4f}")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    card.wall_s = time.perf_counter() - t0
    card.steps = step
    card.images_per_s = step * data.batch / card.wall_s if card.wall_s > 0 else 0.0
    if bar is not None:
        bar.close()
    encoder.eval()
    return card


def _progress_bar(total: int, name: str, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"train {name}", unit="step", leave=False)
