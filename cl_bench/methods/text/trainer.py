"""The text-encoder trainer shared by SimCSE and CCP: batches of sentences -> contrastive loss.

An objective supplies ``make_batches(split, batch_size, generator)`` (an iterator of batches for
one epoch) and ``loss(encoder, batch)``; the trainer runs ``epochs`` of them (capped at
``max_steps``) with the recipe's optimizer and learning-rate schedule (the image trainer's
``build_optimizer`` / ``lr_at_step``), truncating sentences to ``max_length`` tokens while
training. Dropout is on (train mode) during training; the encoder ends in eval mode with its
own ``max_length`` restored. Only the encoder's weights are kept; heads are discarded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.errors import ClBenchError
from cl_bench.methods.trainer import build_optimizer, fit, lr_at_step
from cl_bench.models.interfaces.text_encoder import TextEncoder
from cl_bench.specs import TrainRecipe


class TextTrainParams(BaseModel):
    """``train.params`` common to text objectives (each objective adds its own)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=0.05, gt=0)
    max_steps: int | None = Field(default=None, ge=1)  # cap on optimizer steps over all epochs
    max_length: int = Field(default=32, ge=4)  # tokens per sentence while training


@dataclass
class TextTrainCard:
    objective: str
    steps: int
    epochs: int
    batch_size: int
    max_length: int
    n_train: int
    loss_curve: list[float] = field(default_factory=list)  # mean loss over each 10-step window
    first_loss: float = float("nan")
    final_loss: float = float("nan")
    wall_s: float = 0.0
    sentences_per_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class TextObjective(Protocol):
    name: str

    def parameters(self) -> Iterator[nn.Parameter]: ...

    def make_batches(self, split: Any, batch_size: int, generator: torch.Generator) -> Iterator[Any]: ...

    def steps_per_epoch(self, split: Any, batch_size: int) -> int: ...

    def loss(self, encoder: TextEncoder, batch: Any) -> tuple[torch.Tensor, int]: ...


def check_text_training(model: Any, split: Any, objective: str) -> None:
    if not isinstance(model, TextEncoder):
        raise ClBenchError(f"objective '{objective}' trains a text encoder; the method's arch is {type(model).__name__}")
    if getattr(split, "texts", None) is None:
        raise ClBenchError(
            f"objective '{objective}' needs training text: set train.data to a text dataset (e.g. text-corpus)"
        )


def train_text_encoder(
    model: TextEncoder,
    objective: TextObjective,
    recipe: TrainRecipe,
    params: TextTrainParams,
    split: Any,
    seed: int,
    device: torch.device,
    progress: bool = False,
) -> TextTrainCard:
    per_epoch = objective.steps_per_epoch(split, recipe.batch_size)
    if per_epoch < 1:
        raise ClBenchError(
            f"objective '{objective.name}': {len(split.texts)} training sentences give no batch of {recipe.batch_size}"
        )
    total = recipe.epochs * per_epoch
    if params.max_steps is not None:
        total = min(total, params.max_steps)
    warmup = min(recipe.warmup_epochs * per_epoch, total)
    model.to(device)
    objective_module = objective if isinstance(objective, nn.Module) else None
    if objective_module is not None:
        objective_module.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if objective_module is not None:
        trainable += [p for p in objective_module.parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, recipe)
    generator = torch.Generator().manual_seed(seed)

    card = TextTrainCard(objective.name, 0, 0, recipe.batch_size, params.max_length, len(split.texts))
    saved_max_length = model.max_length
    model.max_length = params.max_length
    model.train()
    if objective_module is not None:
        objective_module.train()
    seen = [0]

    def loss(batch: Any) -> torch.Tensor:
        value, n_sentences = objective.loss(model, batch)
        seen[0] += n_sentences
        return value

    try:
        log = fit(
            optimizer, total=total, batches=lambda epoch: objective.make_batches(split, recipe.batch_size, generator),
            loss=loss, lr_at=lambda step: lr_at_step(step, total, warmup, recipe),
            check_step=lambda step, value: f"objective '{objective.name}': the loss became {value} at step {step}",
            progress=f"train {objective.name}" if progress else None,
        )
    finally:
        model.max_length = saved_max_length
        model.eval()
    values = log.losses()
    card.epochs, card.steps = len(log.epochs), log.steps
    if values:
        card.first_loss, card.final_loss = values[0], values[-1]
    card.loss_curve = [round(sum(values[i : i + 10]) / len(values[i : i + 10]), 5) for i in range(0, len(values), 10)]
    card.wall_s = round(log.wall_s, 3)
    card.sentences_per_s = round(seen[0] / max(card.wall_s, 1e-9), 2)
    return card
