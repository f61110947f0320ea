"""``mcl-clip``: Multistage Contrastive Learning for image–text (Zhang et al., arXiv 2402.11816).

The image–text version of ``mcl`` (see :mod:`cl_bench.methods.image.mcl`, whose batching helpers it
reuses). The arch is ``scene-clip`` with ``stages: S``: S independently initialised two-tower
models. Stage 0 is plain CLIP. After stage k the training images are embedded by stage k's image
tower (L2-normalised), clustered by k-means into ``clusters`` groups, and the cluster ids of all
stages so far are combined into pseudo-labels (``label · K + cluster``, the authors'
``cluster.py``, which also clusters image features). Stage k + 1 draws every batch from ONE
pseudo-label group ("feature-aware negative sampling": an anchor's negatives share everything
the earlier stages learned), so its CLIP loss must separate pairs by other features. At
evaluation the stages' normalised embeddings are concatenated ("cross-stage representation
integration"; ``SceneClipStack``).

Each stage trains ``epochs`` epochs with its own optimizer and schedule, so S stages cost about
S × one ``clip`` run. Within-group batching: members shuffled and cut into ``batch_size`` chunks;
a group smaller than a batch gives one smaller batch if it has at least ``min_group`` images.
Counterfactual twins (a split's ``twin_of``) take the group of their first image and stay in one
batch (:func:`twin_group_batches`), as the other objectives' batches keep them.
Simplification: the paper fine-tunes a pretrained CLIP stage by stage on CC12M; here every stage
is trained from scratch on the scenes (as the image ``mcl`` does).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.methods.image_text.losses import clip_loss
from cl_bench.methods.image_text.objectives import Parts, encode_pairs
from cl_bench.methods.image_text.trainer import (
    Batch,
    ImageTextObjective,
    ImageTextParams,
    ImageTextTrainCard,
    check_split,
    embed_all_images,
    train_image_text,
    twin_batches,
)
from cl_bench.methods.image.mcl import combine_pseudo_labels, group_batches, kmeans_labels
from cl_bench.specs import TrainRecipe
from cl_bench.params import validate_params


def twin_group_batches(groups: np.ndarray, twin_of: np.ndarray, batch_size: int, min_group: int,
                       gen: torch.Generator) -> list[torch.Tensor]:
    """:func:`~cl_bench.methods.image.mcl.group_batches` for a split with twins: each pair joins the
    group of its first image, and a group's batches keep its pairs together (:func:`twin_batches`)."""
    groups = np.array(groups, copy=True)
    first = np.flatnonzero(twin_of > np.arange(len(twin_of)))
    groups[twin_of[first]] = groups[first]
    batches: list[torch.Tensor] = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        local = {int(i): k for k, i in enumerate(members)}
        sub = np.asarray([local.get(int(twin_of[i]), -1) for i in members], np.int64)
        if len(members) >= batch_size:
            batches += [torch.from_numpy(members)[b] for b in twin_batches(sub, batch_size, gen)]
        elif len(members) >= min_group:
            batches.append(torch.from_numpy(members)[torch.randperm(len(members), generator=gen)])
    order = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in order]


class MclClipParams(ImageTextParams):
    clusters: int = Field(default=10, ge=1, le=1000)
    kmeans_restarts: int = Field(default=3, ge=1, le=50)
    min_group: int = Field(default=8, ge=2)


@register("objective", "mcl-clip", params=MclClipParams)
class MclClip(ImageTextObjective):

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Parts]:
        img, txt = encode_pairs(model, batch)
        return clip_loss(img, txt, model.logit_scale.exp()), {}

    @classmethod
    def train_model(
        cls, model: nn.Module, recipe: TrainRecipe, split: Any, num_classes: int, seed: int,
        device: torch.device, progress: bool = False,
    ) -> ImageTextTrainCard:
        """Train every stage of a ``scene-clip`` stack in place; leaves it in eval mode."""
        params = validate_params(MclClipParams, recipe.params, "train.params (objective mcl-clip)")
        stages = list(getattr(model, "stages", None) or [model])
        if not all(hasattr(s, "image_features") for s in stages):
            raise ClBenchError(
                f"objective mcl-clip trains arch scene-clip (params.stages: S), got {type(model).__name__}"
            )
        split = check_split(split, cls(**recipe.params))
        n = len(split)
        batch_size = min(recipe.batch_size, n)
        groups = np.zeros(n, dtype=np.int64)
        card = ImageTextTrainCard(recipe.objective, recipe.epochs, batch_size, n)
        images = split.images.tensor().to(device)
        t0 = time.perf_counter()
        for k, stage in enumerate(stages):
            current = groups

            def plan(gen: torch.Generator, g: np.ndarray = current) -> list[torch.Tensor]:
                if split.twin_of is not None:
                    return twin_group_batches(g, split.twin_of, batch_size, params.min_group, gen)
                return group_batches(g, batch_size, params.min_group, gen)

            if not plan(torch.Generator().manual_seed(0)):
                raise ClBenchError(
                    f"mcl-clip stage {k}: no pseudo-label group has {params.min_group}+ images; "
                    f"lower train.params.clusters (now {params.clusters}) or min_group"
                )
            sizes = np.bincount(groups)
            sub = train_image_text(stage, cls(**recipe.params), recipe, split, seed + 7919 * k, device, progress,
                                   plan=plan, label=f" stage {k}")
            card.loss_curve += sub.loss_curve
            card.steps += sub.steps
            card.extra.setdefault("stages", []).append({
                "stage": k, "steps": sub.steps, "wall_s": sub.wall_s, "loss_curve": sub.loss_curve,
                "groups": len(sizes), "largest_group": int(sizes.max()), "smallest_group": int(sizes.min()),
                "logit_scale": sub.logit_scale,
            })
            if k + 1 < len(stages):
                feats = embed_all_images(stage, images)
                clusters = kmeans_labels(feats, params.clusters, params.kmeans_restarts, seed + k)
                groups = combine_pseudo_labels(groups, clusters, params.clusters)
        card.wall_s = round(time.perf_counter() - t0, 3)
        seen = sum(s["steps"] for s in card.extra["stages"]) * batch_size
        card.pairs_per_s = round(seen / card.wall_s, 2) if card.wall_s > 0 else 0.0
        card.logit_scale = round(float(model.logit_scale.detach().exp()), 4)
        model.eval()
        return card
