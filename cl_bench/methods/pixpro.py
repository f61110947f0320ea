"""``pixpro`` and ``pixcontrast``: pixel-level pretext tasks (Xie et al., arXiv 2011.10043).

Two views of each image are random resized crops whose geometry is kept
(:mod:`cl_bench.methods.dense_augment`). The encoder's last feature map goes through a
projection "MLP" of 1x1 convs (``conv-BN-ReLU-conv``), giving per-cell vectors ``x`` (online)
and, through a momentum copy of encoder and projector, ``x'`` (EMA with coefficient ``m``
rising from ``momentum`` to 1 on a cosine schedule, as BYOL/PixPro). Cell ``i`` of one view
and cell ``j`` of the other are a positive pair when their source-image distance divided by the
larger feature-bin diagonal is below ``threshold`` (T = 0.7).

- **PixPro**: the pixel propagation module (PPM) smooths the online vectors,
  ``y_i = Σ_j max(cos(x_i, x_j), 0)^γ · g(x_j)`` over the cells ``j`` of the same view
  (``g``: identity, a 1x1 conv, or conv-BN-ReLU-conv for ``transform_layers`` 0 / 1 / 2), and
  the loss is the paper's ``-cos(y_i, x'_j) - cos(y_j, x'_i)`` averaged over the positive pairs
  of each image, then over the images that have at least one positive pair (:func:`pixpro_loss`).
- **PixContrast**: for every cell ``i`` with a positive, ``-log Σ_{j∈A_p} e^{cos(x_i,x'_j)/τ} /
  Σ_{j∈A_p∪A_n} e^{cos(x_i,x'_j)/τ}`` where A_p / A_n are the positive / other cells of the other
  view of the same image; mean over such cells, averaged over both directions (:func:`pixcontrast_loss`).
- **pretrained FPN** (arch ``with-fpn``, the paper's head-network pre-training): the pixel loss
  runs on every FPN level (shared projector and PPM) and is averaged over the levels; the FPN
  is saved with the encoder and loaded into the FPN detector (:mod:`cl_bench.models.pyramid`).
- **instance branch** (``instance_weight`` > 0, the paper's PixPro + instance): pooled features
  -> MLP projector -> MLP predictor, BYOL's ``2 - 2 cos`` against the momentum projection of
  the other view, both directions, added with weight ``instance_weight`` (α).

The shared image trainer cannot feed crop geometry, so the objective trains itself
(``train_model``, used by :func:`cl_bench.obtain.trainer_for`). Only the encoder (with its FPN, if any) is kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.methods.byol import byol_loss
from cl_bench.methods.dense_augment import DenseAugmentConfig, make_views, positive_mask
from cl_bench.methods.momentum import momentum_copy
from cl_bench.methods.objective import Objective
from cl_bench.methods.trainer import EpochLog, TrainCard, build_optimizer, fit, lr_at_step, momentum_hooks
from cl_bench.specs import TrainRecipe, validate_params


class PixelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    proj_hidden: int = Field(default=512, ge=1)
    proj_dim: int = Field(default=128, ge=1)
    threshold: float = Field(default=0.7, gt=0)
    momentum: float = Field(default=0.99, ge=0, le=1)
    gamma: float = Field(default=2.0, gt=0)  # PixPro only
    transform_layers: int = Field(default=1, ge=0, le=2)  # PixPro only
    temperature: float = Field(default=0.3, gt=0)  # PixContrast only
    instance_weight: float = Field(default=0.0, ge=0)


# ----------------------------------------------------------------------------- losses


def ppm(x: torch.Tensor, transform: nn.Module, gamma: float) -> torch.Tensor:
    """Pixel propagation: x [N, D, H, W] -> y [N, D, H, W], y_i = Σ_j max(cos(x_i, x_j), 0)^γ g(x_j)."""
    n, _, h, w = x.shape
    flat = F.normalize(x.flatten(2), dim=1)  # [N, D, P]
    sim = torch.bmm(flat.transpose(1, 2), flat).clamp(min=0).pow(gamma)  # [N, P(i), P(j)]
    g = transform(x).flatten(2)  # [N, D, P]
    return torch.bmm(g, sim.transpose(1, 2)).view(n, -1, h, w)


def _unit(t: torch.Tensor) -> torch.Tensor:
    """[N, D, H, W] -> [N, D, P] with unit-length columns."""
    return F.normalize(t.flatten(2), dim=1)


def _per_image_pos_mean(values: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean of values over positive pairs per image [N], images that have positives [N] bool)."""
    count = pos.sum(dim=(1, 2))
    total = (values * pos).sum(dim=(1, 2))
    return total / count.clamp(min=1), count > 0


def pixpro_loss(y1: torch.Tensor, y2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, pos: torch.Tensor
                ) -> torch.Tensor:
    """``-cos(y_i, x'_j) - cos(y_j, x'_i)`` over positive pairs (i in view 1, j in view 2).

    y*: PPM outputs of the online branch, k*: momentum projections, all [N, D, H, W];
    pos: bool [N, P1, P2]. Mean over each image's pairs, then over images with a pair.
    """
    c12 = torch.bmm(_unit(y1).transpose(1, 2), _unit(k2))  # [N, P1, P2]: cos(y1_i, k2_j)
    c21 = torch.bmm(_unit(k1).transpose(1, 2), _unit(y2))  # [N, P1, P2]: cos(k1_i, y2_j)
    m12, has = _per_image_pos_mean(c12, pos)
    m21, _ = _per_image_pos_mean(c21, pos)
    if not bool(has.any()):
        return (y1.sum() + y2.sum()) * 0.0
    return -(m12 + m21)[has].mean()


def pixcontrast_loss(q1: torch.Tensor, q2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, pos: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """PixContrast (paper eq. 2) both directions; anchors without a positive are skipped."""

    def one_way(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = torch.bmm(_unit(q).transpose(1, 2), _unit(k)) / temperature  # [N, Pq, Pk]
        log_all = torch.logsumexp(logits, dim=2)
        log_pos = torch.logsumexp(logits.masked_fill(~mask, float("-inf")), dim=2)
        has = mask.any(dim=2)
        if not bool(has.any()):
            return logits.sum() * 0.0
        return (log_all - log_pos)[has].mean()

    return 0.5 * (one_way(q1, k2, pos) + one_way(q2, k1, pos.transpose(1, 2)))


# ----------------------------------------------------------------------------- modules


def conv_projector(cin: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                         nn.Conv2d(hidden, out, 1))


def mlp(cin: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


def ppm_transform(dim: int, layers: int) -> nn.Module:
    if layers == 0:
        return nn.Identity()
    if layers == 1:
        return nn.Conv2d(dim, dim, 1)
    return nn.Sequential(nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True),
                         nn.Conv2d(dim, dim, 1))


def dense_maps(encoder: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(the maps the pixel task runs on, the backbone's last map for the instance branch).

    A plain encoder: its last map, once. A ``with-fpn`` encoder: every FPN level ('0'..'L-1',
    the parameter-free pooled level left out), which pretrains the FPN with the backbone.
    """
    maps = encoder.feature_maps(x)
    last = maps[list(maps)[-1]]
    if hasattr(encoder, "pyramid_of"):
        return list(encoder.pyramid_of(maps).values()), last
    return [last], last


class PixelObjective(Objective):
    """Heads and loss of a pixel-level objective; the momentum encoder and projectors are its
    declared momentum pairs (made in :meth:`momentum_pairs`, moved by the training loop)."""

    n_views = 2
    mode = "pixpro"

    def __init__(self, embed_dim: int, num_classes: int, instance_dim: int | None = None, **params: Any) -> None:
        """``embed_dim``: channels of the maps the pixel task runs on; ``instance_dim``: of the
        backbone's last map (the instance branch's input), when it differs (a pretrained FPN)."""
        super().__init__(embed_dim, num_classes)
        self.params = validate_params(PixelParams, params, f"train.params (objective {self.mode})")
        p = self.params
        self.projector = conv_projector(embed_dim, p.proj_hidden, p.proj_dim)
        self.transform = ppm_transform(p.proj_dim, p.transform_layers) if self.mode == "pixpro" else nn.Identity()
        self.instance = p.instance_weight > 0
        if self.instance:
            self.inst_projector = mlp(instance_dim or embed_dim, p.proj_hidden, p.proj_dim)
            self.predictor = mlp(p.proj_dim, p.proj_hidden, p.proj_dim)

    def online(self) -> list[nn.Module]:
        """The modules the momentum branch mirrors (besides the encoder)."""
        return [self.projector, *([self.inst_projector] if self.instance else [])]

    def pixel_loss(self, feats: torch.Tensor, t_feats: torch.Tensor, target_proj: nn.Module, v1: Any, v2: Any
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the pixel loss on one feature level of both views, positives per image)."""
        n = len(v1.images)
        fh, fw = feats.shape[-2:]
        pos = positive_mask(v1, v2, fh, fw, self.params.threshold)
        x = self.projector(feats)
        with torch.no_grad():
            k = target_proj(t_feats)
            k1, k2 = k[:n], k[n:]
        if self.mode == "pixpro":
            y = ppm(x, self.transform, self.params.gamma)
            return pixpro_loss(y[:n], y[n:], k1, k2, pos), pos.sum(dim=(1, 2)).float().mean()
        return pixcontrast_loss(x[:n], x[n:], k1, k2, pos, self.params.temperature), pos.sum(dim=(1, 2)).float().mean()

    def loss(self, encoder: nn.Module, target: nn.ModuleList, v1: Any, v2: Any) -> dict[str, torch.Tensor]:
        """Pixel loss (mean over the levels of a pretrained FPN, if any) + the optional instance branch."""
        n = len(v1.images)
        levels, feats = dense_maps(encoder, torch.cat([v1.images, v2.images]))
        with torch.no_grad():
            t_levels, t_feats = dense_maps(target[0], torch.cat([v1.images, v2.images]))
        per_level = [self.pixel_loss(f, t, target[1], v1, v2) for f, t in zip(levels, t_levels)]
        pixel = torch.stack([loss for loss, _ in per_level]).mean()
        out = {"pixel": pixel, "positives_per_image": per_level[-1][1]}
        total = pixel
        if self.instance:
            q = self.predictor(self.inst_projector(feats.mean(dim=(2, 3))))
            with torch.no_grad():
                z = target[2](t_feats.mean(dim=(2, 3)))
            inst = byol_loss(q[:n], z[n:]) + byol_loss(q[n:], z[:n])
            out["instance"] = inst
            total = total + self.params.instance_weight * inst
        out["loss"] = total
        return out

    @property
    def momentum_base(self) -> float:  # type: ignore[override]
        return self.params.momentum

    def momentum_pairs(self, encoder: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        """The momentum encoder and projector(s), made here as frozen copies (``self.target``)."""
        online = [encoder, *self.online()]
        self.target = nn.ModuleList([momentum_copy(m) for m in online])
        return list(zip(online, self.target))

    @classmethod
    def train_model(cls, encoder: nn.Module, recipe: TrainRecipe, split: Any, num_classes: int, seed: int,
                    device: torch.device, progress: bool = False) -> TrainCard:
        """Train ``encoder`` in place on ``split`` (images of one size) with this objective."""
        if not hasattr(encoder, "feature_maps"):
            raise ClBenchError(f"objective {cls.mode} needs an encoder with feature maps (resnet*, small-resnet)")
        aug = validate_params(DenseAugmentConfig, recipe.augment, f"train.augment (objective {cls.mode})")
        images = split.tensor() if hasattr(split, "tensor") else None
        if images is None or images.shape[1] != 3:
            raise ClBenchError(f"objective {cls.mode} trains on RGB images of one size (a dense dataset's train split)")
        if len(images) < 2:
            raise ClBenchError(f"the training split has {len(images)} image(s): need at least 2")
        encoder.to(device)
        with torch.no_grad():
            was = encoder.training
            encoder.eval()
            levels, last = dense_maps(encoder, images[:1].to(device))
            encoder.train(was)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            obj = cls(embed_dim=int(levels[0].shape[1]), num_classes=num_classes, instance_dim=int(last.shape[1]),
                      **recipe.params)
        obj.to(device)
        params = [p for p in [*encoder.parameters(), *obj.parameters()] if p.requires_grad]
        opt = build_optimizer(params, recipe)
        batch = min(recipe.batch_size, len(images))
        steps_per_epoch = len(images) // batch
        total = steps_per_epoch * recipe.epochs
        warmup = min(recipe.warmup_epochs * steps_per_epoch, total)
        momentum = momentum_hooks(obj, encoder, total)
        gen = torch.Generator().manual_seed(seed)
        aug_gen = torch.Generator(device=device).manual_seed(seed + 1)
        images = images.to(device) if device.type != "cpu" else images

        def batches(epoch: int) -> Iterator[torch.Tensor]:
            order = torch.randperm(len(images), generator=gen)
            for s in range(steps_per_epoch):
                yield images[order[s * batch:(s + 1) * batch].to(images.device)].to(device)

        card = TrainCard(cls.mode, recipe.epochs, 0, n_train=len(images))
        encoder.train()
        obj.train()
        log = fit(
            opt, total=total, epochs=recipe.epochs, batches=batches,
            views=lambda x: (make_views(x, aug, aug_gen), make_views(x, aug, aug_gen)),
            loss=lambda v: obj.loss(encoder, obj.target, *v)["loss"],
            lr_at=lambda step: lr_at_step(step, total, warmup, recipe),
            after_step=momentum,
            end_epoch=lambda e: card.loss_curve.append(_python_mean(e, steps_per_epoch, cls.mode)),
            progress=f"train {cls.mode}" if progress else None,
        )
        card.wall_s = log.wall_s
        card.steps = log.steps
        card.images_per_s = log.steps * batch / card.wall_s if card.wall_s > 0 else 0.0
        encoder.eval()
        return card

    def forward(self, encoder: Any, views: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        raise ClBenchError(f"objective {self.mode} trains through its own train_model (it needs crop geometry)")


def _python_mean(epoch: EpochLog, steps: int, mode: str) -> float:
    """The epoch's mean loss, summed as Python floats (as this trainer always logged it)."""
    total = 0.0
    for value in epoch.losses:
        total += float(value)
    mean = total / max(1, steps)
    if not math.isfinite(mean):
        raise ClBenchError(f"training loss of '{mode}' became {mean} in epoch {epoch.index + 1}; lower train.lr")
    return mean


@register("objective", "pixpro")
class PixPro(PixelObjective):
    mode = "pixpro"


@register("objective", "pixcontrast")
class PixContrast(PixelObjective):
    mode = "pixcontrast"
