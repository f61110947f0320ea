"""``supervised``: a linear classifier on the embedding, cross-entropy on the labels.

One augmented view per image; the classifier is discarded after training (the encoder is
what gets evaluated). Params: ``label_smoothing`` (default 0).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.methods.objective import Objective
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.specs import validate_params


class SupervisedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label_smoothing: float = Field(default=0.0, ge=0, lt=1)


@register("objective", "supervised")
class Supervised(Objective):
    """Cross-entropy of a linear classifier on the encoder's embedding."""

    n_views = 1
    needs_labels = True

    def __init__(self, embed_dim: int, num_classes: int, **params: Any) -> None:
        super().__init__(embed_dim, num_classes)
        self.params = validate_params(SupervisedParams, params, where="train.params (objective supervised)")
        if num_classes < 2:
            raise ClBenchError(
                f"objective supervised needs labelled training data with >= 2 classes, got {num_classes}; "
                "train on a classification dataset"
            )
        self.classifier = nn.Linear(embed_dim, num_classes)

    def forward(
        self, encoder: ImageEncoder, views: list[torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        logits = self.classifier(encoder(views[0]))
        return F.cross_entropy(logits, labels, label_smoothing=self.params.label_smoothing)
