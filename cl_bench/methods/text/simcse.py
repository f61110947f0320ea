"""Unsupervised SimCSE (Gao et al. 2021, arXiv 2104.08821), objective ``simcse``.

Each sentence is encoded twice in train mode; the two dropout masks are the only augmentation.
The loss is InfoNCE over the batch: for sentence i, its second view is the positive and the
second views of the other sentences are the negatives, on cosine similarity / temperature
(0.05 in the paper). Both views go through the encoder in one forward pass of 2B sentences
(dropout masks are drawn independently per row). Trained from the method's text encoder (the
bundled MiniLM in baselines/simcse.yaml) by the shared text trainer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from cl_bench.components import register
from cl_bench.methods.objective import Objective
from cl_bench.methods.text.trainer import (
    TextTrainCard,
    TextTrainParams,
    check_text_training,
    train_text_encoder,
)
from cl_bench.models.interfaces.text_encoder import TextEncoder
from cl_bench.specs import TrainRecipe, validate_params


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-entropy of cos(anchor_i, positive_j) / t with the matching j = i as the target."""
    a = F.normalize(anchors, dim=-1)
    p = F.normalize(positives, dim=-1)
    logits = a @ p.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


@register("objective", "simcse")
class SimCSE(Objective):
    name = "simcse"

    def __init__(self, embed_dim: int = 0, num_classes: int = 0, **params: Any) -> None:
        super().__init__(embed_dim, num_classes)
        self.params = validate_params(TextTrainParams, params, "train.params of objective simcse")

    def steps_per_epoch(self, split: Any, batch_size: int) -> int:
        return len(split.texts) // batch_size

    def make_batches(self, split: Any, batch_size: int, generator: torch.Generator) -> Iterator[list[str]]:
        order = torch.randperm(len(split.texts), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [split.texts[i] for i in order[start : start + batch_size]]

    def loss(self, encoder: TextEncoder, batch: list[str]) -> tuple[torch.Tensor, int]:
        z = encoder.encode(batch + batch)
        z1, z2 = z[: len(batch)], z[len(batch) :]
        return info_nce(z1, z2, self.params.temperature), len(batch)

    @staticmethod
    def train_model(
        model: Any, recipe: TrainRecipe, split: Any, num_classes: int, seed: int,
        device: torch.device, progress: bool = False,
    ) -> TextTrainCard:
        check_text_training(model, split, "simcse")
        objective = SimCSE(**recipe.params)
        return train_text_encoder(model, objective, recipe, objective.params, split, seed, device, progress)
