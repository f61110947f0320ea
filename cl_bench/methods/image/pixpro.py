"""``pixpro`` and ``pixcontrast``: pixel-level pretext tasks (Xie et al., arXiv 2011.10043).

Two views of each image are random resized crops whose geometry is kept
(:mod:`cl_bench.methods.image.dense_augment`). The encoder's last feature map goes through a
projection "MLP" of 1x1 convs (``conv-BN-ReLU-conv``), giving per-cell vectors ``x`` (online)
and, through a momentum copy of encoder and projector, ``x'`` (EMA with coefficient ``m``
rising from ``momentum`` to 1 on a cosine schedule, as BYOL/PixPro). Cell ``i`` of one view
and cell ``j`` of the other are a positive pair when their source-image distance divided by the
larger feature-bin diagonal is below ``threshold`` (T = 0.7).

- **PixPro**: the pixel propagation module (PPM) smooths the online vectors as the official
  ``featprop`` does: ``y_i = Σ_j max(cos(x_i, x_j), 0)^γ · ĝ(x_j)`` over the cells ``j`` of the same
  view, where ``ĝ`` is the value transform ``g`` (identity, a 1x1 conv, or conv-BN-ReLU-conv for
  ``transform_layers`` 0 / 1 / 2) followed by L2 normalisation over channels (+1e-6 on the
  similarities when γ < 1). The loss is the official ``regression_loss``, both directions summed
  (:func:`pixpro_loss`): ``-2 · mean_n [Σ_{(i,j) pos} cos(y_i, x'_j) / (#pos_n + 1e-6)]`` — per image
  the mean over its positive pairs, then the mean over all images of the batch (an image without
  a positive pair contributes 0) — plus the same with the views swapped.
- **PixContrast**: for every cell ``i`` with a positive, ``-log Σ_{j∈A_p} e^{cos(x_i,x'_j)/τ} /
  Σ_{j∈A_p∪A_n} e^{cos(x_i,x'_j)/τ}`` where A_p / A_n are the positive / other cells of the other
  view of the same image; mean over such cells, averaged over both directions (:func:`pixcontrast_loss`).
- **pretrained FPN** (arch ``with-fpn``, the paper's head-network pre-training): the pixel loss
  runs on every FPN level (shared projector and PPM) and is averaged over the levels; the FPN
  is saved with the encoder and loaded into the FPN detector (:mod:`cl_bench.models.image.pyramid`).
- **instance branch** (``instance_weight`` > 0, the paper's PixPro + instance), as the official
  code: the backbone map -> 1x1-conv projector -> 1x1-conv predictor, then global average pooling;
  ``-2 · mean_n cos(q_n, z'_n)`` against the pooled momentum projection of the other view, both
  directions summed, added with weight ``instance_weight`` (α).

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
from cl_bench.methods.image.dense_augment import DenseAugmentConfig, make_views, positive_mask
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
    """Pixel propagation (the official ``featprop``): x [N, D, H, W] -> y [N, D, H, W],
    ``y_i = Σ_j max(cos(x_i, x_j), 0)^γ · normalize(g(x))_j``."""
    n, _, h, w = x.shape
    flat = F.normalize(x.flatten(2), dim=1)  # [N, D, P]
    sim = torch.bmm(flat.transpose(1, 2), flat).clamp(min=0)  # [N, P(i), P(j)]
    if gamma < 1:
        sim = sim + 1e-6  # the official code's guard: 0 ** γ has no gradient for γ < 1
    sim = sim.pow(gamma)
    value = F.normalize(transform(x), dim=1).flatten(2)  # [N, D, P]: unit value vectors
    return torch.bmm(value, sim.transpose(1, 2)).view(n, -1, h, w)


def _unit(t: torch.Tensor) -> torch.Tensor:
    """[N, D, H, W] -> [N, D, P] with unit-length columns."""
    return F.normalize(t.flatten(2), dim=1)


def _pixel_regression(q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """The official ``regression_loss`` of one direction: q [N, D, Pq], k [N, D, Pk] unit columns,
    pos [N, Pq, Pk]; ``-2 · mean_n Σ_pos cos / (#pos_n + 1e-6)`` (every image of the batch counts)."""
    cos = torch.bmm(q.transpose(1, 2), k)
    m = pos.to(cos.dtype)
    return -2 * ((cos * m).sum(dim=(1, 2)) / (m.sum(dim=(1, 2)) + 1e-6)).mean()


def pixpro_loss(y1: torch.Tensor, y2: torch.Tensor, k1: torch.Tensor, k2: torch.Tensor, pos: torch.Tensor
                ) -> torch.Tensor:
    """The official PixPro loss: ``regression_loss(y1, x'2) + regression_loss(y2, x'1)``.

    y*: PPM outputs of the online branch, k*: momentum projections, all [N, D, H, W] (normalised
    here); pos: bool [N, P1, P2], cell i of view 1 against cell j of view 2.
    """
    return _pixel_regression(_unit(y1), _unit(k2), pos) + _pixel_regression(_unit(y2), _unit(k1),
                                                                             pos.transpose(1, 2))


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


def instance_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The official instance ``regression_loss``: ``-2 · mean_n cos(p_n, z_n)`` over the batch."""
    return -2 * F.cosine_similarity(p, z.detach(), dim=1).mean()


# ----------------------------------------------------------------------------- modules


def conv_projector(cin: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                         nn.Conv2d(hidden, out, 1))


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
    views_apart = True  # each view through the encoders and heads on its own (batch norm per view)

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
            self.inst_projector = conv_projector(instance_dim or embed_dim, p.proj_hidden, p.proj_dim)
            self.predictor = conv_projector(p.proj_dim, p.proj_hidden, p.proj_dim)

    def online(self) -> list[nn.Module]:
        """The modules the momentum branch mirrors (besides the encoder)."""
        return [self.projector, *([self.inst_projector] if self.instance else [])]

    def _apart(self, module: Any, a: Any, b: Any) -> tuple[Any, Any]:
        """``module`` on view 1 and view 2: one at a time (``views_apart``) or in one batch, split."""
        if self.views_apart:
            return module(a), module(b)
        n = len(a)
        both = module(torch.cat([a, b]))
        if isinstance(both, tuple):  # dense_maps: (levels, last map)
            return ([t[:n] for t in both[0]], both[1][:n]), ([t[n:] for t in both[0]], both[1][n:])
        return both[:n], both[n:]

    def pixel_loss(self, f1: torch.Tensor, f2: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor,
                   target_proj: nn.Module, v1: Any, v2: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(the pixel loss on one feature level of both views, positives per image).

        f*/t*: the online / momentum encoder's maps of view 1 and 2."""
        fh, fw = f1.shape[-2:]
        pos = positive_mask(v1, v2, fh, fw, self.params.threshold)
        x1, x2 = self._apart(self.projector, f1, f2)
        with torch.no_grad():
            k1, k2 = self._apart(target_proj, t1, t2)
        per_image = pos.sum(dim=(1, 2)).float().mean()
        if self.mode == "pixpro":
            y1, y2 = self._apart(lambda x: ppm(x, self.transform, self.params.gamma), x1, x2)
            return pixpro_loss(y1, y2, k1, k2, pos), per_image
        return pixcontrast_loss(x1, x2, k1, k2, pos, self.params.temperature), per_image

    def loss(self, encoder: nn.Module, target: nn.ModuleList, v1: Any, v2: Any) -> dict[str, torch.Tensor]:
        """Pixel loss (mean over the levels of a pretrained FPN, if any) + the optional instance branch."""
        (levels1, feats1), (levels2, feats2) = self._apart(lambda x: dense_maps(encoder, x), v1.images, v2.images)
        with torch.no_grad():
            (t_levels1, t_feats1), (t_levels2, t_feats2) = self._apart(lambda x: dense_maps(target[0], x),
                                                                       v1.images, v2.images)
        per_level = [self.pixel_loss(*maps, target[1], v1, v2)
                     for maps in zip(levels1, levels2, t_levels1, t_levels2)]
        pixel = torch.stack([loss for loss, _ in per_level]).mean()
        out = {"pixel": pixel, "positives_per_image": per_level[-1][1]}
        total = pixel
        if self.instance:
            q1, q2 = self._apart(lambda f: self.predictor(self.inst_projector(f)).mean(dim=(2, 3)), feats1, feats2)
            with torch.no_grad():  # pooled after the heads
                z1, z2 = self._apart(lambda t: target[2](t).mean(dim=(2, 3)), t_feats1, t_feats2)
            inst = instance_loss(q1, z2) + instance_loss(q2, z1)
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
    # 2: as the official code: featprop's unit value vectors, regression_loss's averaging, the
    # views through encoders and heads one at a time, the instance branch pooled after its heads
    version = 2


@register("objective", "pixcontrast")
class PixContrast(PixelObjective):
    mode = "pixcontrast"
    views_apart = False  # not in the official code: both views in one batch, as its committed results
