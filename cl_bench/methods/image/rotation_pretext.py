"""``simclr-rotation``: SimCLR regularised by a rotation pretext task.

ScatSimCLR (Kinakh et al., arXiv 2108.13939).

As the authors' ``PretextTaskTrainer`` (github.com/vkinakh/scatsimclr, ``src/trainer/pretext_task_trainer.py``
with ``config_pretext.yaml``: ``rotation: True``, ``jigsaw: False``, ``lambda: 0.3``):

- two augmented views give SimCLR's NT-Xent on the projections (``simclr``);
- four more views of each image are rotated clockwise by 0°, 90°, 180°, 270° (labels 0, 1, 2, 3,
  the order of the authors' ``RotationDataset``: none, ``ROTATE_90_CLOCKWISE``, ``ROTATE_180``,
  ``ROTATE_90_COUNTERCLOCKWISE``) and go through the encoder in a pass of their own;
- a classifier on the representation ``h`` (not the projection) predicts the rotation:
  ``Linear(h, 512) -> ReLU -> Dropout(0.5) -> Linear(512, 128) -> ReLU -> Dropout(0.5) -> Linear(128, 4)``,
  cross-entropy averaged over the 4N rotated views;
- loss = NT-Xent + λ · cross-entropy, λ = ``pretext_weight`` (0.3).

One difference in order: the authors rotate the image and then augment it; here the trainer's
augmented view is rotated. The two agree in distribution when the augmentation's parameter
distribution does not change under a 90° rotation (crop ratios in [r, 1/r], symmetric rotation
and translation, no horizontal flip, as the digits recipes); with ``hflip`` > 0 they differ, the
authors' label then being the rotation before the flip.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.methods.image.simclr import SimCLR
from cl_bench.methods.image.two_view import ContrastiveParams
from cl_bench.models.interfaces.image_encoder import ImageEncoder

N_ROTATIONS = 4


class RotationPretextParams(ContrastiveParams):
    pretext_weight: float = Field(default=0.3, ge=0)  # λ
    pretext_hidden: tuple[int, int] = (512, 128)
    pretext_dropout: float = Field(default=0.5, ge=0, lt=1)


def rotation_head(embed_dim: int, hidden: tuple[int, int], dropout: float) -> nn.Sequential:
    """The authors' rotation classifier (``_fc1``, ``_fc2``, ``_classification_fc``)."""
    return nn.Sequential(
        nn.Linear(embed_dim, hidden[0]), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(hidden[0], hidden[1]), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(hidden[1], N_ROTATIONS),
    )


def rotated_batch(views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``views[k]`` [N, C, H, W] rotated clockwise by k·90° (square images), stacked, with labels k.

    Returns ([4N, C, H, W], [4N])."""
    if len(views) != N_ROTATIONS:
        raise ValueError(f"need {N_ROTATIONS} views to rotate, got {len(views)}")
    images = torch.cat([torch.rot90(v, -k, dims=(2, 3)) for k, v in enumerate(views)])  # -k: clockwise
    labels = torch.arange(N_ROTATIONS, device=images.device).repeat_interleave(len(views[0]))
    return images, labels


@register("objective", "simclr-rotation")
class SimCLRRotation(SimCLR):
    """NT-Xent on views 0 and 1 + λ · rotation cross-entropy on views 2-5 (rotated 0/90/180/270° clockwise)."""

    objective_name = "simclr-rotation"
    params_model = RotationPretextParams
    n_views = 2 + N_ROTATIONS

    def __init__(self, embed_dim: int, num_classes: int, **params: Any) -> None:
        super().__init__(embed_dim, num_classes, **params)
        p = self.params
        self.pretext_head = rotation_head(embed_dim, p.pretext_hidden, p.pretext_dropout)

    def pretext_loss(self, encoder: ImageEncoder, views: list[torch.Tensor]) -> torch.Tensor:
        images, labels = rotated_batch(views)
        return F.cross_entropy(self.pretext_head(encoder(images)), labels)

    def forward(self, encoder: ImageEncoder, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        if len(views) != self.n_views:
            raise ValueError(f"{type(self).__name__} takes {self.n_views} views, got {len(views)}")
        if views[0].shape[-1] != views[0].shape[-2]:
            raise ClBenchError(f"objective simclr-rotation rotates images by 90°: they must be square, "
                               f"got {views[0].shape[-2]}x{views[0].shape[-1]} (use a square train.augment size)")
        contrastive = super().forward(encoder, views[:2], labels)
        return contrastive + self.params.pretext_weight * self.pretext_loss(encoder, views[2:])
