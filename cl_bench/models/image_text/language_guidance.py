"""DenseCLIP's language guidance, whatever the towers (Rao et al., CVPR 2022, arXiv 2112.01518):
the arch params of ``denseclip``, :class:`LanguageGuidance` (the learnable contexts, the context
decoder and gamma over the towers a subclass gives, and the pixel-text score map) and the
segmenter it builds on the dense protocols' trunk (:class:`LanguageGuidedSegmenter`). The towers:
scene-clip ones in :mod:`cl_bench.models.image_text.denseclip`, released open_clip ResNets in
:mod:`cl_bench.models.image_text.denseclip_open_clip`; the method-level description is in the
former's docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cl_bench.errors import ClBenchError
from cl_bench.models.image.dense_trunk import Trunk
from cl_bench.models.image_text.context_decoder import ContextDecoder, pixel_text_score_map
from cl_bench.params import Strict
from cl_bench.protocols.dense.seg_heads import AuxiliaryLogits, head_input


class TowersParams(Strict):
    towers: str = "clip"  # the image-text method whose trained towers are used
    towers_seed: int | None = Field(default=None, ge=0)  # None: the run's seed


class DenseClipParams(TowersParams):
    tower: Literal["scene", "open_clip"] = "scene"  # scene: ``towers``' trained model; open_clip: released weights
    model: str = "RN50"  # tower open_clip: the open_clip architecture (a ModifiedResNet one)
    pretrained: str | None = None  # tower open_clip: the local weights file (--checkpoint sets it)
    text_length: int = Field(default=5, ge=3)  # tower open_clip: SOT + name tokens + EOT (the authors' 5)
    input_resolution: int = Field(default=512, ge=32)  # tower open_clip: positional grid resized to this / 32
    context_length: int = Field(default=8, ge=0, le=64)  # learnable context vectors before the class name
    decoder_width: int = Field(default=256, ge=4)
    decoder_heads: int = Field(default=4, ge=1)
    decoder_layers: int = Field(default=3, ge=0)
    decoder_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    gamma_init: float = Field(default=1e-4, ge=0.0)
    tau: float = Field(default=0.07, gt=0.0)
    aux_weight: float = Field(default=0.4, ge=0.0)


class LanguageGuidance(nn.Module):
    """DenseCLIP's learnable language guidance over some towers (contexts, context decoder, gamma,
    the segmenter); a subclass gives the towers: ``normalize`` / ``stem`` / ``stages`` (the trunk),
    :meth:`dense_embeddings`, :meth:`class_text`, :meth:`image_head` and the frozen ``text``."""

    arch_name = "denseclip"
    text: nn.Module

    def __init__(self, p: DenseClipParams, embed_dim: int, token_width: int) -> None:
        super().__init__()
        if p.decoder_width % p.decoder_heads:
            raise ClBenchError(f"arch denseclip: decoder_width {p.decoder_width} is not divisible by decoder_heads "
                               f"{p.decoder_heads}")
        self.contexts = nn.Parameter(torch.empty(p.context_length, token_width))
        nn.init.trunc_normal_(self.contexts)
        self.context_decoder = ContextDecoder(embed_dim, p.decoder_width, p.decoder_heads, p.decoder_layers,
                                              p.decoder_dropout)
        self.gamma = nn.Parameter(torch.full((embed_dim,), float(p.gamma_init)))
        self.tau = p.tau
        self.aux_weight = p.aux_weight
        self.embed_dim = embed_dim

    def dense_embeddings(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global [B, D], dense [B, D, h, w]) embeddings of the last-stage map ``fmap``."""
        raise NotImplementedError

    def class_text(self, names: list[str]) -> torch.Tensor:
        """Class text embeddings [K, D] from the contexts and the class names through the frozen tower."""
        raise NotImplementedError

    def image_head(self) -> nn.Module:
        """The image tower's part after the stages (trained with the backbone)."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> LanguageGuidance:
        super().train(mode)
        self.text.eval()  # frozen: no dropout in the text tower
        return self

    def guide(self, fmap: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(score map [B, K, h, w], updated text embeddings [B, K, D]) for the last-stage map ``fmap``."""
        glob, visual = self.dense_embeddings(fmap)
        b = fmap.shape[0]
        text = self.class_text(names).expand(b, -1, -1)
        context = torch.cat([glob[:, None], visual.flatten(2).transpose(1, 2)], dim=1)  # [B, 1 + hw, D]
        text = text + self.gamma * self.context_decoder(text, context)
        return pixel_text_score_map(visual, text), text

    def language_guided_segmenter(self, trunk: Trunk, class_names: list[str],
                                  head_for: Callable[[list[int]], nn.Module]) -> nn.Module:
        """The segmenter: the head over the stages with ``s`` concatenated to the last
        (``head_for(stage channels)``), upsampled; in training also ``s / tau`` for the auxiliary loss."""
        if self.stem is not trunk.stem:
            raise ClBenchError("arch denseclip: the trunk is not this model's image tower")
        channels = [trunk.channels[n] for n in trunk.names]
        channels[-1] += len(class_names)
        return LanguageGuidedSegmenter(trunk, head_for(channels), self, class_names)


class LanguageGuidedSegmenter(nn.Module):
    def __init__(self, trunk: Trunk, head: nn.Module, clip: LanguageGuidance, class_names: list[str]) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.clip = clip
        self.class_names = list(class_names)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The image tower: the trunk and what follows its stages (DenseCLIP's ``backbone``)."""
        return [*self.trunk.parameters(), *self.clip.image_head().parameters()]

    def forward(self, images: torch.Tensor) -> torch.Tensor | AuxiliaryLogits:
        maps = list(self.trunk(images).values())
        score, _ = self.clip.guide(maps[-1], self.class_names)
        maps[-1] = torch.cat([maps[-1], score], dim=1)
        logits = F.interpolate(self.head(head_input(self.head, maps)), size=images.shape[-2:], mode="bilinear",
                               align_corners=False)
        if self.training:
            return AuxiliaryLogits(logits, score / self.clip.tau, self.clip.aux_weight)
        return logits

    def card(self) -> dict[str, Any]:
        return {"class_names": self.class_names, "contexts": int(self.clip.contexts.shape[0]), "tau": self.clip.tau,
                "aux_weight": self.clip.aux_weight, "gamma_mean_abs": round(float(self.clip.gamma.detach().abs().mean()), 6)}
