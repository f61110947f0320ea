"""``mcl``: Multistage Contrastive Learning (Zhang et al., "Learning the Unlearned", arXiv 2402.11816).

MCL fights feature suppression by training in stages. Stage 0 is plain contrastive learning
(NT-Xent, as ``simclr``). After stage k the training images are embedded by stage k's encoder
(L2-normalised), clustered by k-means into ``clusters`` groups, and the cluster ids of all
stages so far are combined into pseudo-labels (``label = label · K + cluster``, as the
authors' ``cluster.py``): two images share a pseudo-label only if they fell in the same
cluster at every previous stage. Stage k + 1 then draws every batch from ONE pseudo-label
group (the "feature-aware negative sampling" of the authors' ``MCL_batch_sampler``), so an
anchor's negatives all share the features the earlier stages already learned and the new
stage has to find others. The final representation concatenates every stage's embedding
(``mcl-stack`` arch, "cross-stage representation integration").

It runs through ``train_model`` (``obtain.trainer_for`` picks it up) because the batching
differs per stage. Each stage trains its own freshly initialised copy of the base encoder
(``mcl-stack`` builds them) for ``epochs`` epochs with its own projection head, optimizer and
schedule — so S stages cost S times one ``simclr`` run. Batching per epoch: each group's
members are shuffled and cut into ``batch_size`` chunks (remainder dropped); a group smaller
than ``batch_size`` gives one smaller batch if it has at least ``min_group`` images (the
reference sampler drops it), otherwise it is skipped; the batch order is shuffled.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from cl_bench.components import register
from cl_bench.data.image.types import ImageSplit
from cl_bench.errors import ClBenchError
from cl_bench.methods.image.augment import Augmenter
from cl_bench.methods.image.simclr import nt_xent
from cl_bench.methods.image.two_view import ContrastiveParams, TwoViewContrastive
from cl_bench.methods.trainer import build_objective, build_optimizer, epoch_mean, fit, lr_at_step
from cl_bench.specs import TrainRecipe, validate_params


class MCLParams(ContrastiveParams):
    clusters: int = Field(default=10, ge=1, le=1000)  # K of the k-means after each stage
    kmeans_restarts: int = Field(default=3, ge=1, le=50)
    min_group: int = Field(default=8, ge=2)  # smaller pseudo-label groups give no batch


@dataclass
class MCLCard:
    objective: str
    epochs: int  # per stage
    steps: int = 0
    loss_curve: list[float] = field(default_factory=list)  # every stage's epochs, in order
    wall_s: float = 0.0
    images_per_s: float = 0.0
    n_train: int = 0
    stages: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def combine_pseudo_labels(previous: np.ndarray, clusters: np.ndarray, k: int) -> np.ndarray:
    """Pseudo-labels after one more clustering: ``previous · k + clusters``, renumbered 0..G-1
    (same group iff same group before AND same new cluster)."""
    joint = np.asarray(previous, dtype=np.int64) * k + np.asarray(clusters, dtype=np.int64)
    return np.unique(joint, return_inverse=True)[1].astype(np.int64)


def group_batches(
    groups: np.ndarray, batch_size: int, min_group: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """One epoch of batches (index tensors), each drawn from a single group (see module doc)."""
    groups = np.asarray(groups)
    batches: list[torch.Tensor] = []
    for g in np.unique(groups):
        members = torch.from_numpy(np.flatnonzero(groups == g))
        members = members[torch.randperm(len(members), generator=gen)]
        if len(members) >= batch_size:
            batches += list(members[: len(members) // batch_size * batch_size].split(batch_size))
        elif len(members) >= min_group:
            batches.append(members)
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


def embed_images(encoder: nn.Module, images: torch.Tensor, device: torch.device, batch: int = 256) -> np.ndarray:
    """L2-normalised embeddings [N, D] of ``images`` in eval mode (the encoder's mode is restored)."""
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        out = [encoder(images[i : i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)]
    encoder.train(was)
    return torch.nn.functional.normalize(torch.cat(out), dim=1).numpy()


def kmeans_labels(features: np.ndarray, k: int, restarts: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    k = min(k, len(features))
    if k <= 1:
        return np.zeros(len(features), dtype=np.int64)
    km = KMeans(n_clusters=k, n_init=restarts, random_state=seed % 2**31)
    return km.fit_predict(features.astype(np.float64)).astype(np.int64)


def _split_images(split: ImageSplit) -> torch.Tensor:
    if hasattr(split, "tensor"):
        return split.tensor()
    return torch.stack([split[i][0] for i in range(len(split))])


@register("objective", "mcl")
class MCL(TwoViewContrastive):
    """The per-stage loss (NT-Xent with a projection head) and the multistage trainer."""

    objective_name = "mcl"
    params_model = MCLParams

    def loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return nt_xent(z1, z2, self.params.temperature)

    @classmethod
    def train_model(
        cls,
        model: nn.Module,
        recipe: TrainRecipe,
        split: ImageSplit,
        num_classes: int,
        seed: int,
        device: torch.device,
        progress: bool = False,
    ) -> MCLCard:
        """Train every stage of an ``mcl-stack`` encoder in place; leaves it in eval mode."""
        from cl_bench.models.image.mcl_stack import MCLStack

        if not isinstance(model, MCLStack):
            raise ClBenchError(
                f"objective mcl trains an 'mcl-stack' encoder (arch: {{name: mcl-stack, params: {{base: ..., "
                f"stages: S}}}}), got {type(model).__name__}"
            )
        if len(split) < 2:
            raise ClBenchError(f"the training split has {len(split)} image(s): need at least 2")
        params = validate_params(MCLParams, recipe.params, "train.params (objective mcl)")
        images = _split_images(split)
        model.to(device)
        card = MCLCard(objective=recipe.objective, epochs=recipe.epochs, n_train=len(images))
        groups = np.zeros(len(images), dtype=np.int64)
        t0 = time.perf_counter()
        for k in range(len(model.stages)):
            stage = model.stage(k)
            info = _train_stage(stage, model.stage_dim, recipe, images, groups, params, seed + 7919 * k, device, progress, k)
            card.stages.append(info)
            card.loss_curve += info["loss_curve"]
            card.steps += info["steps"]
            if k + 1 < len(model.stages):
                feats = embed_images(stage, images, device)
                clusters = kmeans_labels(feats, params.clusters, params.kmeans_restarts, seed + k)
                groups = combine_pseudo_labels(groups, clusters, params.clusters)
        card.wall_s = time.perf_counter() - t0
        card.images_per_s = sum(s["images"] for s in card.stages) / card.wall_s if card.wall_s > 0 else 0.0
        model.eval()
        return card


def _train_stage(
    encoder: nn.Module,
    embed_dim: int,
    recipe: TrainRecipe,
    images: torch.Tensor,
    groups: np.ndarray,
    params: MCLParams,
    seed: int,
    device: torch.device,
    progress: bool,
    index: int,
) -> dict[str, Any]:
    """One stage: NT-Xent on batches drawn within ``groups``; returns the stage's record."""
    augment = Augmenter.from_params(recipe.augment)
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1)
    objective = build_objective(recipe, embed_dim, 0, seed).to(device)
    batch_size = min(recipe.batch_size, len(images))
    steps_per_epoch = len(group_batches(groups, batch_size, params.min_group, torch.Generator().manual_seed(0)))
    if steps_per_epoch == 0:
        raise ClBenchError(
            f"mcl stage {index}: no pseudo-label group has {params.min_group}+ images; "
            f"lower train.params.clusters (now {params.clusters}) or min_group"
        )
    opt = build_optimizer([p for p in [*encoder.parameters(), *objective.parameters()] if p.requires_grad], recipe)
    total = steps_per_epoch * recipe.epochs
    warmup = min(recipe.warmup_epochs * steps_per_epoch, total)
    encoder.train()
    objective.train()
    curve: list[float] = []
    seen = [0]

    def views(x: torch.Tensor) -> list[torch.Tensor]:
        seen[0] += len(x)
        return [augment(x, aug_gen), augment(x, aug_gen)]

    log = fit(
        opt, total=total, epochs=recipe.epochs,
        batches=lambda epoch: (images[idx].to(device) for idx in group_batches(groups, batch_size, params.min_group, gen)),
        views=views,
        loss=lambda views: objective(encoder, views, torch.zeros(0)),
        lr_at=lambda step: lr_at_step(step, total, warmup, recipe),
        end_epoch=lambda e: curve.append(epoch_mean(e, steps_per_epoch, recipe, f" stage {index}")),
        progress=f"train mcl stage {index}" if progress else None,
    )
    step = log.steps
    encoder.eval()
    sizes = np.bincount(groups)
    return {
        "stage": index,
        "steps": step,
        "images": seen[0],
        "loss_curve": curve,
        "groups": len(sizes),
        "groups_used": int((sizes >= min(batch_size, params.min_group)).sum()),
        "largest_group": int(sizes.max()),
        "smallest_group": int(sizes.min()),
    }
