"""THE training loop, :func:`fit`, and the image trainer built on it.

:func:`fit` runs optimizer steps; everything that differs between trainers is a hook:

- ``batches(epoch)``: how one epoch's batches are drawn (a seeded shuffle, one pseudo-label group
  per batch, fresh prompts, an endless stream...);
- ``views(batch)``: how the inputs of the loss are made from a batch (augmented views, crops
  with their geometry; default: the batch itself);
- ``loss(inputs)``: the objective's scalar loss (optionally with named terms);
- ``before_step`` (after ``backward``): gradient clipping or masking;
- ``after_step``: whatever follows an optimizer step — EMA of an objective's declared
  momentum pairs (:class:`MomentumPairs`, as solo-learn's ``BaseMomentumMethod.momentum_pairs``),
  clamping CLIP's logit scale, projecting CPT's offsets back into their ball;
- ``end_epoch``: the trainer's own loss log and finiteness check.

Per step, in this order: inputs = views(batch); loss; every param group's lr = ``lr_at(step)``;
``zero_grad``; ``backward``; before_step hooks; ``optimizer.step()``; after_step hooks. The loop
stops after ``total`` steps or ``epochs`` epochs, whichever comes first.

The image trainer (:func:`train_encoder`): a seeded shuffle picks the batch, the objective's
``n_views`` augmented views are made on the device, the objective returns a scalar loss, the
optimizer (adam | adamw | sgd) steps with the per-step learning rate (linear warmup, then cosine
to 0 or constant), then the objective's momentum pairs (if any) are updated. Heads the objective
owns are discarded; only the encoder is trained in place.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from cl_bench import components
from cl_bench.data.image.types import ArrayImageSplit, ImageSplit
from cl_bench.errors import ClBenchError
from cl_bench.methods.image.augment import Augmenter
from cl_bench.methods.momentum import MomentumPairs
from cl_bench.methods.objective import Objective
from cl_bench.specs import TrainRecipe

ON_DEVICE_MAX_BYTES = 2 * 1024**3  # a pre-loaded split up to this size is moved to the device once

Parts = dict[str, torch.Tensor]
LossOut = torch.Tensor | tuple[torch.Tensor, Parts]
StepHook = Callable[[int], None]


_END = object()


@dataclass
class EpochLog:
    """One epoch as :func:`fit` ran it: the detached loss (and named terms) of every step."""

    index: int
    losses: list[torch.Tensor | float] = field(default_factory=list)  # see _kept
    parts: list[dict[str, torch.Tensor | float]] = field(default_factory=list)


@dataclass
class FitLog:
    steps: int = 0
    epochs: list[EpochLog] = field(default_factory=list)
    wall_s: float = 0.0

    def losses(self) -> list[float]:
        """The loss of every step, in order, as Python floats."""
        return [float(v) for e in self.epochs for v in e.losses]


def _kept(value: torch.Tensor) -> torch.Tensor | float:
    """A step's logged value: on the CPU a Python float (reading it costs no device sync, and a
    detached 0-d tensor kept per step fragmented the heap: lm-pretrain of tiny-lm-facts grew by
    ~4.7 MB a step, 12.6 GB over 975 steps); elsewhere the detached tensor (no sync per step)."""
    value = value.detach()
    return float(value) if value.device.type == "cpu" else value


def fit(
    optimizer: torch.optim.Optimizer,
    *,
    total: int,
    batches: Callable[[int], Iterable[Any]],
    loss: Callable[[Any], LossOut],
    views: Callable[[Any], Any] | None = None,
    epochs: int | None = None,
    lr_at: Callable[[int], float] | None = None,
    before_step: Sequence[StepHook] = (),
    after_step: Sequence[StepHook] = (),
    end_epoch: Callable[[EpochLog], None] | None = None,
    check_step: Callable[[int, float], str] | None = None,
    progress: str | None = None,
) -> FitLog:
    """Run up to ``total`` optimizer steps (over at most ``epochs`` epochs; None: as many as it
    takes); see the module doc for the hooks and their order.

    ``check_step(step, value)``: when given, every step's loss is checked before ``backward`` and
    a non-finite one raises a ClBenchError with the message it returns (else the trainer checks
    in ``end_epoch``, which costs no device sync per step). ``progress``: a bar's label (None: no bar).
    """
    log = FitLog()
    bar = _progress_bar(total, progress)
    t0 = time.perf_counter()
    epoch = 0
    while (epochs is None or epoch < epochs) and log.steps < total:
        record = EpochLog(epoch)
        drawn = iter(batches(epoch))
        while log.steps < total:  # no batch is drawn past the last step
            batch = next(drawn, _END)
            if batch is _END:
                break
            step = log.steps
            out = loss(views(batch) if views is not None else batch)
            value, parts = out if isinstance(out, tuple) else (out, {})
            if check_step is not None and not math.isfinite(float(value.detach())):
                raise ClBenchError(check_step(step, float(value.detach())))
            if lr_at is not None:
                lr = lr_at(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            for hook in before_step:
                hook(step)
            optimizer.step()
            for hook in after_step:
                hook(step)
            record.losses.append(_kept(value))
            record.parts.append({k: _kept(v) for k, v in parts.items()})
            log.steps += 1
            if bar is not None:
                bar.update(1)
        log.epochs.append(record)
        if end_epoch is not None:
            end_epoch(record)
        if bar is not None and record.losses:
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(record.losses[-1]):.4f}")
        epoch += 1
    log.wall_s = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    return log


def momentum_hooks(objective: Objective, online: nn.Module, total: int) -> list[StepHook]:
    """The EMA of the objective's declared momentum pairs as an ``after_step`` hook (none when it
    declares none); ``online`` is what the objective's momentum branch mirrors (the encoder)."""
    pairs = objective.momentum_pairs(online)
    if not pairs:
        return []
    return [MomentumPairs(pairs, objective.momentum_base, total, objective.momentum_schedule,
                          objective.momentum_copy_buffers)]


def clip_gradients(params: list[nn.Parameter], max_norm: float) -> StepHook:
    """A ``before_step`` hook: clip the global gradient norm of ``params`` to ``max_norm``."""

    def hook(step: int) -> None:
        nn.utils.clip_grad_norm_(params, max_norm)

    return hook


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
    encoder.train()
    objective.train()
    log = fit(
        opt, total=total, epochs=recipe.epochs, batches=lambda epoch: data.epoch(),
        views=lambda b: ([augment(b[0], aug_gen) for _ in range(objective.n_views)], b[1]),
        loss=lambda v: objective(encoder, *v),
        lr_at=lambda step: lr_at_step(step, total, warmup, recipe),
        after_step=momentum_hooks(objective, encoder, total),
        end_epoch=lambda e: card.loss_curve.append(epoch_mean(e, data.steps, recipe)),
        progress=f"train {recipe.objective}" if progress else None,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    card.wall_s = log.wall_s
    card.steps = log.steps
    card.images_per_s = log.steps * data.batch / card.wall_s if card.wall_s > 0 else 0.0
    encoder.eval()
    return card


def epoch_mean(epoch: EpochLog, steps: int, recipe: TrainRecipe, what: str = "") -> float:
    """Mean loss of an epoch of ``steps`` steps (summed on the device: no sync per step); a
    non-finite one is a ClBenchError suggesting a lower learning rate."""
    first = epoch.losses[0] if epoch.losses else None
    total = torch.zeros((), device=first.device if isinstance(first, torch.Tensor) else "cpu")
    for value in epoch.losses:
        total += value
    mean = float(total) / max(1, steps)
    if not math.isfinite(mean):
        raise ClBenchError(
            f"training loss of '{recipe.objective}'{what} became {mean} in epoch {epoch.index + 1}; "
            f"lower train.lr (now {recipe.lr:g}) or add warmup_epochs"
        )
    return mean


def _progress_bar(total: int, label: str | None) -> Any:
    if label is None:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="step", leave=False)
