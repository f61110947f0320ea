"""The image–text trainer shared by clip, dcl-clip, negclip, protoclip, tcl, dreamlip and mcl-clip.

It fits an :class:`~cl_bench.models.interfaces.image_text.ImageTextEncoder` that exposes differentiable
``image_features`` / ``text_features`` (``scene-clip``) on a :class:`CaptionedImages` split:

- every epoch each image gets ONE of its short captions, drawn at random (seeded), so a model
  sees all of an image's captions over the epochs (as COCO-trained CLIPs do);
- batches: a seeded shuffle cut into ``batch_size`` chunks, the remainder dropped (or the
  objective's own batches: MCL draws each batch from one pseudo-label group); a split with
  counterfactual twins (``twin_of``) shuffles a twin pair as one unit, so both land in one batch;
- per step: the objective's loss, the recipe's optimizer (``trainer.build_optimizer``) at the
  step's learning rate (``trainer.lr_at_step``: linear warmup, then cosine|constant), optional
  gradient-norm clipping, then every ``logit_scale*`` parameter clamped to [0, log 100] (CLIP);
- an objective may act at the start of an epoch (ProtoCLIP clusters the episode there).

Everything random comes from generators seeded by ``seed`` (shuffles and caption picks: CPU;
augmentations: the device), so a run is deterministic per seed on CPU. Heads the objective owns
are discarded; only the encoder is kept (the caller caches its weights).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from cl_bench.data.image_text.types import CaptionedImages
from cl_bench.errors import ClBenchError
from cl_bench.methods.image.augment import Augmenter
from cl_bench.methods.objective import Objective
from cl_bench.methods.trainer import (
    EpochLog,
    build_optimizer,
    clip_gradients,
    fit,
    lr_at_step,
    momentum_hooks,
)
from cl_bench.specs import TrainRecipe
from cl_bench.params import Strict

LOG_MAX_SCALE = math.log(100.0)


class ImageTextParams(Strict):
    """``train.params`` every image–text objective accepts (each adds its own)."""

    max_steps: int | None = Field(default=None, ge=1)  # cap on optimizer steps (per stage for mcl-clip)
    grad_clip: float | None = Field(default=None, gt=0)  # max global gradient norm


@dataclass
class Batch:
    """One step's data: image ``indices`` into the split, ``images`` on the device, the epoch's
    short ``captions``, the ``long_captions`` (None if the split has none), ``augment`` (seeded
    light augmentation on the device), ``gen`` (a seeded CPU generator for text sampling) and
    ``hard_negatives``: EVERY training image's verified hard-negative captions, indexed like the
    split (not only the batch's: NegCLIP also needs its alternative images'; None if the split has none),
    and ``hard_negative_positives``, the true caption each of them swaps (None if the split has none)."""

    indices: torch.Tensor
    images: torch.Tensor
    captions: list[str]
    long_captions: list[str] | None
    augment: Callable[[torch.Tensor], torch.Tensor]
    gen: torch.Generator
    hard_negatives: list[list[str]] | None = None
    hard_negative_positives: list[list[str]] | None = None


@dataclass
class ImageTextTrainCard:
    objective: str
    epochs: int
    batch_size: int
    n_train: int
    steps: int = 0
    loss_curve: list[float] = field(default_factory=list)  # mean loss per epoch (every stage's, in order)
    loss_parts: dict[str, float] = field(default_factory=dict)  # last epoch's mean of each term
    logit_scale: float = 0.0  # exp(logit_scale) at the end
    wall_s: float = 0.0
    pairs_per_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ImageTextObjective(Objective):
    """Base of the image–text objectives: validates ``train.params`` with ``params_model`` and
    trains through :func:`train_image_text` (``obtain.trainer_for`` finds ``train_model``)."""

    needs_long_captions = False
    needs_hard_negatives = False

    def __init__(self, embed_dim: int = 0, num_classes: int = 0, **params: Any) -> None:
        super().__init__(embed_dim, num_classes, **params)

    def start_epoch(self, model: nn.Module, images: torch.Tensor, captions: list[str], epoch: int) -> None:
        """Called before each epoch with all training images (on the device) and their captions."""

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def forward(self, *args: Any) -> torch.Tensor:  # the image trainer's entry point is not used
        raise ClBenchError(f"objective {self.objective_name} trains image–text models through its own train_model")

    def card_extra(self) -> dict[str, Any]:
        return {}

    @classmethod
    def train_model(
        cls, model: nn.Module, recipe: TrainRecipe, split: Any, num_classes: int, seed: int,
        device: torch.device, progress: bool = False,
    ) -> ImageTextTrainCard:
        objective = cls(**recipe.params)
        return train_image_text(model, objective, recipe, split, seed, device, progress)


def check_split(split: Any, objective: ImageTextObjective) -> CaptionedImages:
    if not isinstance(split, CaptionedImages):
        raise ClBenchError(
            f"objective {objective.objective_name} trains on captioned images, not {type(split).__name__}; "
            "set train.data to a captioned-image dataset (e.g. {name: scenes-captions})"
        )
    if len(split) < 2:
        raise ClBenchError(f"the training split has {len(split)} image(s): need at least 2")
    if objective.needs_long_captions and split.long_captions is None:
        raise ClBenchError(f"objective {objective.objective_name} needs long captions; this training split has none")
    if objective.needs_hard_negatives and split.hard_negatives is None:
        raise ClBenchError(
            f"objective {objective.objective_name} needs hard-negative captions; this training split has none "
            "(train on a captioned dataset that generates them, e.g. {name: scenes-captions})"
        )
    return split


def check_model(model: nn.Module, objective: str) -> None:
    if not (hasattr(model, "image_features") and hasattr(model, "text_features")):
        raise ClBenchError(
            f"objective {objective} trains a two-tower model with image_features/text_features "
            f"(arch scene-clip), got {type(model).__name__}"
        )


def shuffled_batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """A seeded permutation cut into ``batch_size`` chunks; the remainder is dropped."""
    order = torch.randperm(n, generator=gen)
    return list(order[: n // batch_size * batch_size].split(batch_size))


def twin_batches(twin_of: np.ndarray, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Like :func:`shuffled_batches`, but a twin pair (``twin_of``) is shuffled as one unit and
    never split: a pair that finds one slot left waits for the next batch (and the pairs still
    waiting at the end make batches of their own). Every batch has ``batch_size`` images; what
    does not fill one is dropped, so an epoch has ``len // batch_size`` batches or one fewer."""
    units = [[i] if j < 0 else [i, j] for i, j in enumerate(twin_of.tolist()) if j < 0 or i < j]
    batches: list[torch.Tensor] = []
    current: list[int] = []
    waiting: list[list[int]] = []

    def place(unit: list[int]) -> None:
        current.extend(unit)
        if len(current) == batch_size:
            batches.append(torch.tensor(current))
            current.clear()

    for k in torch.randperm(len(units), generator=gen).tolist():
        while waiting and len(current) + len(waiting[0]) <= batch_size:
            place(waiting.pop(0))
        if len(current) + len(units[k]) <= batch_size:
            place(units[k])
        else:
            waiting.append(units[k])
    current.clear()  # the last, unfilled batch
    for unit in waiting:
        if len(current) + len(unit) <= batch_size:
            place(unit)
    return batches


def pick_captions(split: CaptionedImages, gen: torch.Generator) -> list[str]:
    """One short caption per image, uniformly among its captions."""
    counts = torch.tensor([len(c) for c in split.captions], dtype=torch.float64)
    pick = (torch.rand(len(counts), generator=gen, dtype=torch.float64) * counts).long().tolist()
    return [c[k] for c, k in zip(split.captions, pick)]


def build_optimizer_no_decay_gains(model: nn.Module, objective: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    """The recipe's optimizer; as open_clip, 1-d parameters (biases, norm gains) and the logit
    scales get no weight decay."""
    decay, no_decay = [], []
    for module in (model, objective):
        for name, p in module.named_parameters():
            if p.requires_grad:
                plain = p.ndim < 2 or name.rsplit(".", 1)[-1].startswith("logit_scale")
                (no_decay if plain else decay).append(p)
    if not decay:
        decay, no_decay = no_decay, []
    opt = build_optimizer(decay, recipe)
    if no_decay:
        opt.add_param_group({"params": no_decay, "weight_decay": 0.0})
    return opt


def clamp_logit_scales(*modules: nn.Module) -> None:
    with torch.no_grad():
        for module in modules:
            for name, p in module.named_parameters():
                if name.rsplit(".", 1)[-1].startswith("logit_scale"):
                    p.clamp_(0.0, LOG_MAX_SCALE)


BatchPlan = Callable[[torch.Generator], list[torch.Tensor]]


def train_image_text(
    model: nn.Module,
    objective: ImageTextObjective,
    recipe: TrainRecipe,
    split: Any,
    seed: int,
    device: torch.device,
    progress: bool = False,
    plan: BatchPlan | None = None,
    label: str = "",
) -> ImageTextTrainCard:
    """Train ``model`` in place (see the module doc); leaves it in eval mode."""
    check_model(model, objective.objective_name)
    split = check_split(split, objective)
    n = len(split)
    batch_size = min(recipe.batch_size, n)
    gen = torch.Generator().manual_seed(seed)
    text_gen = torch.Generator().manual_seed(seed + 2)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1)
    augmenter = Augmenter.from_params(recipe.augment)
    twin_of = split.twin_of
    plan = plan or ((lambda g: shuffled_batches(n, batch_size, g)) if twin_of is None
                    else (lambda g: twin_batches(twin_of, batch_size, g)))
    per_epoch = len(plan(torch.Generator().manual_seed(0)))
    if per_epoch < 1:
        raise ClBenchError(f"objective {objective.objective_name}: {n} images give no batch of {batch_size}")
    total = per_epoch * recipe.epochs
    if objective.params.max_steps is not None:
        total = min(total, objective.params.max_steps)
    warmup = min(recipe.warmup_epochs * per_epoch, total)

    images = split.images.tensor().to(device)
    model.to(device)
    objective.to(device)
    params = [p for p in [*model.parameters(), *objective.parameters()] if p.requires_grad]
    opt = build_optimizer_no_decay_gains(model, objective, recipe)
    card = ImageTextTrainCard(recipe.objective, recipe.epochs, batch_size, n)

    def batches(epoch: int) -> Iterator[Batch]:
        captions = pick_captions(split, gen)
        objective.start_epoch(model, images, captions, epoch)
        model.train()
        objective.train()
        for idx in plan(gen):
            ids = idx.tolist()
            yield Batch(
                idx, images[idx.to(device)], [captions[i] for i in ids],
                None if split.long_captions is None else [split.long_captions[i] for i in ids],
                lambda x: augmenter(x, aug_gen), text_gen, split.hard_negatives, split.hard_negative_positives,
            )

    def end_epoch(epoch: EpochLog) -> None:
        sums: dict[str, float] = {}
        for loss, parts in zip(epoch.losses, epoch.parts):
            for key, value in {"loss": loss, **parts}.items():
                sums[key] = sums.get(key, 0.0) + float(value)
        count = max(len(epoch.losses), 1)
        mean = sums.get("loss", 0.0) / count
        if not math.isfinite(mean):
            raise ClBenchError(
                f"training loss of '{recipe.objective}'{label} became {mean} in epoch {epoch.index + 1}; lower train.lr"
            )
        card.loss_curve.append(round(mean, 6))
        card.loss_parts = {k: round(v / count, 6) for k, v in sums.items() if k != "loss"}

    seen = [0]

    def views(batch: Batch) -> Batch:
        seen[0] += len(batch.indices)
        return batch

    log = fit(
        opt, total=total, epochs=recipe.epochs, batches=batches, views=views,
        loss=lambda batch: objective.loss(model, batch),
        lr_at=lambda step: lr_at_step(step, total, warmup, recipe),
        before_step=[] if objective.params.grad_clip is None else [clip_gradients(params, objective.params.grad_clip)],
        after_step=[lambda step: clamp_logit_scales(model, objective), *momentum_hooks(objective, model, total)],
        end_epoch=end_epoch,
        progress=f"train {recipe.objective}{label}" if progress else None,
    )
    card.wall_s = round(log.wall_s, 3)
    card.steps = log.steps
    card.pairs_per_s = round(seen[0] / card.wall_s, 2) if card.wall_s > 0 else 0.0
    card.logit_scale = round(float(model.logit_scale.detach().exp()), 4)
    card.extra = objective.card_extra()
    model.eval()
    return card


def embed_all_images(model: nn.Module, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    """L2-normalised global image embeddings [N, D] in eval mode (the model's mode is restored)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = [model.embed_images(images[i : i + batch]).float().cpu() for i in range(0, len(images), batch)]
    model.train(was)
    return torch.cat(out).numpy()
