"""Objectives ``clip``, ``dcl-clip``, ``dreamlip`` and ``tcl`` (losses in ``methods.image_text.losses``).

``clip`` — symmetric InfoNCE over in-batch image–caption pairs with CLIP's learnable
temperature (Radford et al. 2021).

``dcl-clip`` — the same with DCL's decoupled denominator (positive removed), arXiv 2110.06848.

``dreamlip`` (arXiv 2403.17007) — each image's positives are its epoch's short caption plus
``subcaptions`` sub-captions sampled from its long caption (each sub-caption = 1..
``max_sentences`` distinct sentences, kept in their order; sentences are drawn without
replacement while there are enough): multi-positive InfoNCE, plus ``w_group`` × the grouping
loss of every positive text to its image's local patches (min–max-normalised similarity
weights, threshold ``group_threshold``, a separate learnable local logit scale). With
``subcaptions: 0`` the first term is CLIP's loss. Simplification: no MLLM re-captioning (the
generator's long caption is the "long caption"), and the released code's circle-loss variant of
the multi-positive term is not used (the paper's InfoNCE form is).

``tcl`` (arXiv 2202.10401) — the mean of six terms: image→text and text→image alignment,
image–image InfoNCE between the anchor view and a lightly augmented view (``train.augment``),
text–text InfoNCE between two dropout views of the caption, and the local–global MI terms
(each image patch / text token of the target view must identify its sample's global anchor
embedding). As TCL, the second side of each term is the "target" encoder: with ``momentum > 0``
an exponential moving average of the model (no gradient; the objective's momentum pair, moved by
the training loop after every step), otherwise the online model itself (gradients flow through both sides). Simplifications for CPU scale: no
feature queue (in-batch negatives only), no ITM/MLM heads (they serve TCL's fusion encoder,
which the embedding tasks do not use), image patches are the last-stage map average-pooled to
``local_grid`` × ``local_grid``, and a text's local term averages over its real tokens.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cl_bench.components import register
from cl_bench.methods.image_text.losses import (
    clip_loss,
    dcl_clip_loss,
    global_local_loss,
    grouping_loss,
    info_nce,
    multi_positive_clip_loss,
)
from cl_bench.methods.image_text.trainer import Batch, ImageTextObjective, ImageTextParams
from cl_bench.methods.momentum import MomentumPairs, momentum_copy

Parts = dict[str, torch.Tensor]


def encode_pairs(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    img = F.normalize(model.image_features(batch.images)[0], dim=-1)
    txt = F.normalize(model.text_features(batch.captions)[0], dim=-1)
    return img, txt


@register("objective", "clip")
class Clip(ImageTextObjective):
    objective_name = "clip"

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Parts]:
        img, txt = encode_pairs(model, batch)
        return clip_loss(img, txt, model.logit_scale.exp()), {}


@register("objective", "dcl-clip")
class DclClip(ImageTextObjective):
    objective_name = "dcl-clip"

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Parts]:
        img, txt = encode_pairs(model, batch)
        return dcl_clip_loss(img, txt, model.logit_scale.exp()), {}


class DreamLipParams(ImageTextParams):
    subcaptions: int = Field(default=3, ge=0, le=16)  # K sub-captions per image per step
    max_sentences: int = Field(default=1, ge=1, le=8)  # sentences per sub-caption (1..this)
    w_group: float = Field(default=1.0, ge=0)
    group_threshold: float = Field(default=0.1, ge=0, le=1)


def sample_subcaptions(long_caption: str, k: int, max_sentences: int, gen: torch.Generator) -> list[str]:
    """``k`` sub-captions of a long caption (see the module doc)."""
    from cl_bench.data.scenes.captions import split_sentences

    sentences = split_sentences(long_caption) or [long_caption]
    out: list[str] = []
    pool: list[int] = []
    for _ in range(k):
        size = 1 + int(torch.randint(min(max_sentences, len(sentences)), (1,), generator=gen).item())
        if len(pool) < size:
            pool = torch.randperm(len(sentences), generator=gen).tolist()
        chosen, pool = sorted(pool[:size]), pool[size:]
        out.append(". ".join(sentences[i] for i in chosen))
    return out


@register("objective", "dreamlip")
class DreamLip(ImageTextObjective):
    objective_name = "dreamlip"
    params_model = DreamLipParams
    needs_long_captions = True

    def __init__(self, embed_dim: int = 0, num_classes: int = 0, **params: Any) -> None:
        super().__init__(embed_dim, num_classes, **params)
        self.logit_scale_local = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Parts]:
        p: DreamLipParams = self.params
        k = p.subcaptions
        texts: list[str] = []
        for short, long in zip(batch.captions, batch.long_captions or []):
            texts += [short, *sample_subcaptions(long, k, p.max_sentences, batch.gen)]
        need_local = p.w_group > 0
        img_g, patches = model.image_features(batch.images, local=need_local)
        n = len(batch.captions)
        img = F.normalize(img_g, dim=-1)
        txt = F.normalize(model.text_features(texts)[0], dim=-1).view(n, 1 + k, -1)
        mpc = multi_positive_clip_loss(img, txt, model.logit_scale.exp())
        if not need_local:
            return mpc, {"multi_positive": mpc}
        group = grouping_loss(txt, F.normalize(patches, dim=-1), self.logit_scale_local.exp(), p.group_threshold)
        return mpc + p.w_group * group, {"multi_positive": mpc, "grouping": group}


class TclParams(ImageTextParams):
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)  # 0: the target encoder is the online one
    local_grid: int = Field(default=4, ge=1, le=16)
    augment_anchor: bool = False  # also augment the anchor image view


@register("objective", "tcl")
class Tcl(ImageTextObjective):
    objective_name = "tcl"
    params_model = TclParams

    momentum_schedule = "constant"
    momentum_copy_buffers = False

    def __init__(self, embed_dim: int = 0, num_classes: int = 0, **params: Any) -> None:
        super().__init__(embed_dim, num_classes, **params)
        self._target: list[nn.Module] = []  # the EMA copy (kept out of the objective's parameters)

    @property
    def momentum_base(self) -> float:  # type: ignore[override]
        return self.params.momentum

    def momentum_pairs(self, encoder: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        """With ``momentum`` > 0: the model and its EMA copy (the target encoder)."""
        if self.params.momentum == 0:
            return []
        self._target = [momentum_copy(encoder)]
        pairs = [(encoder, self._target[0])]
        # TCL's own loop moved the copy before each use, so once before the first step too (a
        # no-op in exact arithmetic, not in float): kept, so the EMA's numbers stay the same.
        MomentumPairs(pairs, self.params.momentum, schedule="constant", copy_buffers=False)(0)
        return pairs

    def _target_model(self, model: nn.Module) -> nn.Module:
        if not self._target:
            return model
        self._target[0].train(model.training)
        return self._target[0]

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Parts]:
        p: TclParams = self.params
        view1 = batch.augment(batch.images) if p.augment_anchor else batch.images
        view2 = batch.augment(batch.images)
        img1 = F.normalize(model.image_features(view1)[0], dim=-1)
        txt1 = F.normalize(model.text_features(batch.captions)[0], dim=-1)
        target = self._target_model(model)
        with torch.set_grad_enabled(target is model):
            img2_g, img2_l = target.image_features(view2, local=True, grid=p.local_grid)
            txt2_g, txt2_l, mask = target.text_features(batch.captions, local=True)
        img2 = F.normalize(img2_g, dim=-1)
        txt2 = F.normalize(txt2_g, dim=-1)
        patches = F.normalize(img2_l, dim=-1)
        tokens = F.normalize(txt2_l, dim=-1)
        t = 1.0 / model.logit_scale.exp()
        parts = {
            "i2t": info_nce(img1, txt2, t),
            "t2i": info_nce(txt1, img2, t),
            "i2i": info_nce(img1, img2, t),
            "t2t": info_nce(txt1, txt2, t),
            "g2l_image": global_local_loss(patches, img1, t),
            "g2l_text": global_local_loss(tokens, txt1, t, mask),
        }
        return sum(parts.values()) / len(parts), parts

    def card_extra(self) -> dict[str, Any]:
        return {"momentum": self.params.momentum, "queue": 0}
