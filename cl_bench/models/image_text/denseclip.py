"""DenseCLIP (Rao et al., CVPR 2022, arXiv 2112.01518): language-guided dense prediction on the image
and text towers of an image–text model; archs ``denseclip`` and ``clip-image-tower`` (its reference).

``denseclip`` wraps the towers of another method's trained image–text model (``towers``: a method id,
default ``clip``, obtained through the member machinery — trained once per seed and cached — with
the run's seed unless ``towers_seed`` pins one). As an image encoder it is the image tower (global
embedding); the ``segmentation`` protocol sees that it declares
:meth:`DenseClip.language_guided_segmenter` and builds, on the dilated image trunk:

1. dense visual embeddings ``z = P(f)`` of the last-stage map ``f`` (``P``: the image tower's
   projection into the joint space) and the global one ``z_global = P(mean f)`` (the tower's own
   global embedding; DenseCLIP's attention-pool outputs);
2. class text embeddings ``t_k`` from the frozen text tower fed ``[p_1..p_M, w_k]``: ``M`` learnable
   context vectors (``context_length``; CoOp-style, DenseCLIP's R50 config has 13 - 5 = 8) before the
   class name's word embeddings ``w_k``; the text tower pools as it was trained (scene-clip: mean over
   the tokens, the contexts included);
3. post-model context-aware prompting: ``t <- t + gamma * ContextDecoder(t, [z_global; z])``
   (:mod:`cl_bench.models.image_text.context_decoder`; ``gamma`` per channel, init 1e-4);
4. the pixel-text score map ``s = cos(z, t)`` [B, K, h, w], concatenated to ``f`` as the head's input
   (DenseCLIP concatenates at the last stage, ``score_concat_index=3``);
5. in training, the auxiliary pixel-text loss: cross-entropy of ``s / tau`` (tau 0.07) upsampled to
   the label, weight ``aux_weight`` (0.4), added by the protocol (:class:`AuxiliaryLogits`).

The text tower is frozen (DenseCLIP's ``text_encoder`` lr_mult 0) and kept in eval mode; the
contexts, decoder, gamma, image tower and head train with the task's schedule. Class names: the
dataset's ``prompt_names`` when it has them (the scenes twin: the words its captions use for each
class), else its class names. Pre-model prompting (the paper's alternative, Sec. 3.3) is not built:
the released code and the paper's headline numbers use post-model prompting.

``tower: open_clip``: released CLIP weights instead of scene towers — an open_clip ModifiedResNet
(RN50, RN101, ...) image tower with DenseCLIP's attention pool at every position and open_clip's
text transformer with the contexts after SOT
(:mod:`cl_bench.models.image_text.denseclip_open_clip`); the weights come from ``pretrained`` (a
local file; ``--checkpoint FILE`` sets it).

``clip-image-tower``: the same member's image tower alone (an ordinary image encoder), so the
reference row fine-tunes the same weights with the same head and schedule, without language.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.image_text.language_guidance import (
    DenseClipParams,
    LanguageGuidance,
    LanguageGuidedSegmenter,
    TowersParams,
)
from cl_bench.models.image_text.frozen_sentence_tower import SENTENCE_DIM, FrozenSentenceTower
from cl_bench.models.image_text.scene_clip import SceneClip, pool_map
from cl_bench.models.members import MemberRef, obtain_member

__all__ = ["DenseClip", "DenseClipParams", "LanguageGuidance", "LanguageGuidedSegmenter", "TowersParams"]


class DenseClip(LanguageGuidance):
    """Scene towers (another method's trained :class:`SceneClip`) + the language guidance."""

    def __init__(self, clip: SceneClip, p: DenseClipParams) -> None:
        sentence_tower = isinstance(clip.text, FrozenSentenceTower)
        super().__init__(p, clip.embed_dim, SENTENCE_DIM if sentence_tower else clip.text.token_embedding.embedding_dim)
        self.visual = clip.visual
        self.image_pool = clip.image_pool  # the towers' own global pooling (mean, max or attention):
        self.attention_pool = clip.attention_pool  # registered here, so it trains and is saved with DenseCLIP
        self.image_projection = clip.image_projection
        self.text = clip.text
        self.text_projection = clip.text_projection
        self.tokenizer = clip.tokenizer
        for module in (self.text, self.text_projection):
            module.requires_grad_(False)

    # the image tower's stages, for the dense protocols' trunk (shared modules, no copy)
    @property
    def normalize(self) -> nn.Module:
        return self.visual.normalize

    @property
    def stem(self) -> nn.Module:
        return self.visual.stem

    @property
    def stages(self) -> nn.ModuleList:
        return self.visual.stages

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The image tower's global embedding (L2-normalised), as the image encoder."""
        fmap = self.visual.feature_maps(images)[f"stage{len(self.visual.stages)}"]
        return F.normalize(self.image_projection(self.global_pool(fmap)), dim=-1)

    def class_text(self, names: list[str]) -> torch.Tensor:
        """Class text embeddings [K, D] from ``[contexts; class-name words]`` through the frozen tower
        (a frozen MiniLM tower: ``[CLS] contexts name [SEP]``, :meth:`FrozenSentenceTower.with_contexts`)."""
        if isinstance(self.text, FrozenSentenceTower):
            return self.text_projection(self.text.with_contexts(self.contexts, names))
        ids, mask = self.tokenizer(names)
        device = self.contexts.device
        ids, mask = ids.to(device), mask.to(device)
        k, m = ids.shape[0], self.contexts.shape[0]
        if m + ids.shape[1] > self.text.position_embedding.shape[0]:
            raise ClBenchError(f"arch denseclip: {m} contexts + {ids.shape[1]} name tokens exceed the text tower's "
                               f"{self.text.position_embedding.shape[0]} positions; lower context_length")
        x = torch.cat([self.contexts.expand(k, m, -1), self.text.token_embedding(ids)], dim=1)
        x = x + self.text.position_embedding[: x.shape[1]]
        full = torch.cat([torch.ones(k, m, dtype=torch.bool, device=device), mask], dim=1)
        if self.text.layers is not None:
            x = self.text.layers(x, src_key_padding_mask=~full)
        tokens = self.text.ln_final(x)
        w = full.unsqueeze(-1).to(tokens.dtype)
        return self.text_projection((tokens * w).sum(dim=1) / w.sum(dim=1))

    def global_pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return pool_map(fmap, self.image_pool, self.attention_pool)

    def dense_embeddings(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = fmap.shape[0]
        dense = self.image_projection(fmap.flatten(2).transpose(1, 2))  # [B, hw, D]
        glob = self.image_projection(self.global_pool(fmap))  # [B, D]
        return glob, dense.transpose(1, 2).reshape(b, -1, *fmap.shape[-2:])

    def image_head(self) -> nn.Module:
        return self.image_projection


def _towers(p: TowersParams, members: Any, arch: str) -> SceneClip:
    seed = p.towers_seed if p.towers_seed is not None else int(getattr(members, "seed", 0))
    got = obtain_member(MemberRef(method=p.towers, seed=seed), f"arch {arch} towers", "image_text", members)
    clip = got.model
    if not isinstance(clip, SceneClip):
        raise ClBenchError(f"arch {arch}: towers method '{p.towers}' has a {type(clip).__name__}; DenseCLIP here needs "
                           "scene-clip towers (a single-stage image-text model), or "
                           "released open_clip ResNet weights with tower: open_clip")
    clip.train()
    return clip


@register("arch", "denseclip", params=DenseClipParams)
def build_denseclip(p: DenseClipParams, members: Any = None, **_: Any) -> LanguageGuidance:
    """DenseCLIP over ``towers``' trained image-text model, or over released open_clip weights
    (``tower: open_clip``; see :class:`DenseClipParams`)."""
    if p.tower == "open_clip":
        from cl_bench.models.image_text.denseclip_open_clip import build_open_clip_denseclip

        return build_open_clip_denseclip(p)
    return DenseClip(_towers(p, members, "denseclip"), p)


def denseclip_from_checkpoint(path: Path, params: dict[str, Any]) -> tuple[dict[str, Any], Path | None]:
    """``--checkpoint FILE`` with ``tower: open_clip``: the file becomes ``pretrained`` (the builder
    reads it); with scene towers it is loaded into the built model as usual."""
    if params.get("tower") != "open_clip":
        return params, path
    return {**params, "pretrained": str(Path(path).expanduser())}, None


build_denseclip.from_checkpoint = denseclip_from_checkpoint  # type: ignore[attr-defined]


@register("arch", "clip-image-tower", params=TowersParams)
def build_clip_image_tower(p: TowersParams, members: Any = None, **_: Any) -> nn.Module:
    """The image tower of ``towers``' trained image-text model, as an image encoder."""
    visual = _towers(p, members, "clip-image-tower").visual
    return visual
