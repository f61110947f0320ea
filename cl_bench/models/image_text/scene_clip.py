"""``scene-clip``: a small two-tower image–text encoder for the procedural scenes (CPU scale).

Image tower: a ``small-resnet`` (RGB; stem stride 2 at >= 32 px) whose last-stage map is both
mean-pooled (the global feature) and kept as local "patch" features (TCL, DreamLIP), each
projected linearly (no bias, as CLIP) into the shared space of ``embed_dim``.

Text tower: a deterministic word-level tokenizer (:class:`WordTokenizer`), token + learned
position embeddings, ``text_layers`` pre-norm transformer layers (0 = a bag of words with
position information), a final LayerNorm, a mean over the real tokens and a linear projection.
Per-token projected features are the text's local features (TCL). ``text_tower: minilm``
replaces it with frozen all-MiniLM-L6-v2 sentence vectors (computed once per text and cached)
under a trainable 2-layer MLP (:mod:`cl_bench.models.image_text.frozen_sentence_tower`); the sentence is
then the text's one local feature. ``image_pool: max`` takes the last-stage map's max instead
of its mean as the global image feature; ``image_pool: attention`` is CLIP's attention pooling
(positions + mean token, one query). ``image_tower: convnet`` replaces the small-resnet with
:class:`~cl_bench.models.image.pool_convnet.PoolConvNet` (max-pool downsampling: it learns the
scenes' shapes where the small-resnet memorises them, benchmarks/scene_towers.py). All default to
the original tower: no committed result moves.

Vocabulary: ``[PAD]``, ``[UNK]``, then the sorted union of
:data:`cl_bench.data.scenes.captions.CAPTION_WORDS` (every word the caption generator can emit) and
:data:`PROMPT_WORDS` (prompt-template words: "photo", "picture", "this" ...). Text is lower-cased,
split on anything that is not a letter or digit (so punctuation is stripped) and truncated to
``max_tokens``; any other word is ``[UNK]``. The vocabulary is fixed code, not a parameter: its
sha256 is kept in a non-persistent buffer, so the model fingerprint (and every feature cache
key) changes if the word list ever does.

``logit_scale`` is CLIP's learnable log inverse temperature, initialised to log(1/0.07); trainers
clamp it to log(100) after each step as CLIP does.

``stages: S > 1`` builds :class:`SceneClipStack` (MCL's "cross-stage representation
integration", arXiv 2402.11816): S independently initialised scene-clip models, each embedding
L2-normalised and the S of them concatenated and divided by sqrt(S) (so the result is unit-norm
and its cosine is the mean of the stages' cosines). ``mcl-clip`` trains the stages one by one.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.image.pool_convnet import AttentionPool2d, PoolConvNet
from cl_bench.models.image.small_resnet import SmallResNet
from cl_bench.models.image_text.frozen_sentence_tower import FrozenSentenceTower
from cl_bench.models.interfaces.image_text import ImageTextEncoder
from cl_bench.params import Strict

PROMPT_WORDS: tuple[str, ...] = (
    "a", "an", "the", "this", "that", "photo", "picture", "image", "of", "is", "there", "it", "with",
    "and", "on", "in", "at", "to", "one", "some", "two", "object", "objects", "shape", "shapes", "thing",
    "colour", "color", "not", "no", "which", "what", "where",
)
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]")
_WORD = re.compile(r"[a-z0-9]+")


def scene_vocabulary() -> tuple[str, ...]:
    """``[PAD]``, ``[UNK]``, then the sorted caption-generator and prompt words."""
    from cl_bench.data.scenes.captions import CAPTION_WORDS

    return SPECIAL_TOKENS + tuple(sorted(set(CAPTION_WORDS) | set(PROMPT_WORDS)))


class WordTokenizer:
    """Lower-case word tokenizer over a closed vocabulary (unknown words -> ``[UNK]``)."""

    def __init__(self, vocabulary: tuple[str, ...], max_tokens: int) -> None:
        if vocabulary[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"the vocabulary must start with {SPECIAL_TOKENS}")
        self.vocabulary = vocabulary
        self.index = {w: i for i, w in enumerate(vocabulary)}
        self.max_tokens = max_tokens
        self.pad_id, self.unk_id = 0, 1

    def words(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())

    def ids(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in self.words(text)][: self.max_tokens]

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [N, L] (right-padded with 0) and a mask [N, L] (True = real token). An empty
        text becomes a single ``[UNK]``."""
        rows = [self.ids(t) or [self.unk_id] for t in texts]
        width = max((len(r) for r in rows), default=1)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return ids, ids != self.pad_id

    def digest(self) -> bytes:
        return hashlib.sha256(("\n".join(self.vocabulary) + f"\0{self.max_tokens}").encode()).digest()


class SceneClipParams(Strict):

    embed_dim: int = Field(default=64, ge=2, le=2048)
    image_width: int = Field(default=16, ge=1, le=256)  # small-resnet width
    image_blocks: list[int] = Field(default_factory=lambda: [1, 1, 1], min_length=1, max_length=5)
    text_width: int = Field(default=64, ge=8, le=1024)
    text_layers: int = Field(default=2, ge=0, le=12)
    text_heads: int = Field(default=4, ge=1, le=16)
    text_dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    max_tokens: int = Field(default=40, ge=4, le=512)
    stages: int = Field(default=1, ge=1, le=8)  # > 1: an MCL stack of independent copies
    # "words": the word-level transformer above; "minilm": frozen all-MiniLM-L6-v2 sentence vectors
    # (cached once per text) under a trainable 2-layer MLP of text_width (models/frozen_sentence_tower)
    text_tower: Literal["words", "minilm"] = "words"
    # the global image feature: the last-stage map's mean, or its max (an object's presence
    # anywhere in the scene, not diluted by the background around it)
    image_pool: Literal["mean", "max", "attention"] = "mean"
    # "resnet": small-resnet (strided stem); "convnet": max-pool downsampling (models/image/pool_convnet)
    image_tower: Literal["resnet", "convnet"] = "resnet"
    attention_heads: int = Field(default=4, ge=1, le=16)  # image_pool: attention


def pool_map(fmap: torch.Tensor, image_pool: str, attention_pool: nn.Module | None) -> torch.Tensor:
    """A last-stage map [N, C, h, w] -> [N, C] by ``image_pool`` (mean, max, or the attention pool)."""
    if attention_pool is not None:
        return attention_pool(fmap)
    return fmap.amax(dim=(2, 3)) if image_pool == "max" else fmap.mean(dim=(2, 3))


class TextTower(nn.Module):
    """Word embeddings + positions -> transformer -> LayerNorm -> masked mean; also per-token."""

    def __init__(self, vocab_size: int, width: int, layers: int, heads: int, dropout: float, max_tokens: int) -> None:
        super().__init__()
        if width % heads:
            raise ClBenchError(f"arch scene-clip: text_width {width} is not divisible by text_heads {heads}")
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.randn(max_tokens, width) * 0.01)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=dropout, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else None
        self.ln_final = nn.LayerNorm(width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.dropout(self.token_embedding(ids) + self.position_embedding[: ids.shape[1]])
        if self.layers is not None:
            x = self.layers(x, src_key_padding_mask=~mask)
        tokens = self.ln_final(x)
        m = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        return pooled, tokens


def _halved(size: int, times: int, ceil: bool) -> int:
    """``size`` after ``times`` stride-2 steps: strided 3x3 convs (padding 1) round up, max-pools down."""
    for _ in range(times):
        size = -(-size // 2) if ceil else size // 2
    return size


class SceneClip(ImageTextEncoder):
    """The two towers and their projections; see the module docstring."""

    def __init__(self, p: SceneClipParams, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.embed_dim = p.embed_dim
        self.image_pool = p.image_pool
        norm = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
        self.visual: SmallResNet | PoolConvNet
        if p.image_tower == "convnet":
            self.visual = PoolConvNet(3, p.image_width, p.image_blocks, **norm)
            grid = tuple(_halved(s, len(p.image_blocks), ceil=False) for s in image_size)
        else:
            stride = 2 if min(image_size) >= 32 else 1
            self.visual = SmallResNet(3, width=p.image_width, blocks=p.image_blocks, stem_stride=stride, **norm)
            grid = tuple(_halved(s, len(p.image_blocks) - 1 + (stride == 2), ceil=True) for s in image_size)
        if p.image_pool == "attention" and self.visual.embed_dim % p.attention_heads:
            raise ClBenchError(f"arch scene-clip: the image tower's {self.visual.embed_dim} channels are not "
                               f"divisible by attention_heads {p.attention_heads}")
        self.attention_pool = (AttentionPool2d(grid, self.visual.embed_dim, p.attention_heads)
                               if p.image_pool == "attention" else None)
        self.tokenizer = WordTokenizer(scene_vocabulary(), p.max_tokens)
        self.text: nn.Module = (
            FrozenSentenceTower(p.text_width) if p.text_tower == "minilm"
            else TextTower(len(self.tokenizer.vocabulary), p.text_width, p.text_layers, p.text_heads,
                           p.text_dropout, p.max_tokens)
        )
        self.image_projection = nn.Linear(self.visual.embed_dim, p.embed_dim, bias=False)
        self.text_projection = nn.Linear(p.text_width, p.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("vocab_tag", torch.tensor(list(self.tokenizer.digest()), dtype=torch.uint8),
                             persistent=False)

    def _device(self) -> torch.device:
        return self.logit_scale.device

    # --- differentiable features (trainers) -------------------------------------------------
    def image_features(
        self, images: torch.Tensor, local: bool = False, grid: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Projected global feature [N, D] and, if ``local``, projected local features [N, h·w, D]
        of the last-stage map (average-pooled to ``grid`` x ``grid`` first when given)."""
        fmap = self.visual.feature_maps(images)[f"stage{len(self.visual.stages)}"]
        glob = self.image_projection(self.pool(fmap))
        if not local:
            return glob, None
        if grid is not None:
            fmap = F.adaptive_avg_pool2d(fmap, grid)
        return glob, self.image_projection(fmap.flatten(2).transpose(1, 2))

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """The global image feature [N, C] of a last-stage map (``image_pool``), before the projection."""
        return pool_map(fmap, self.image_pool, self.attention_pool)

    def text_features(self, texts: list[str], local: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Projected global feature [N, D], per-token features [N, L, D] (if ``local``) and the mask."""
        if isinstance(self.text, FrozenSentenceTower):
            pooled, tokens, mask = self.text(texts)
        else:
            ids, mask = self.tokenizer(texts)
            ids, mask = ids.to(self._device()), mask.to(self._device())
            pooled, tokens = self.text(ids, mask)
        glob = self.text_projection(pooled)
        return glob, (self.text_projection(tokens) if local else None), mask

    # --- the ImageTextEncoder interface ------------------------------------------------------
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_features(images.to(self._device()))[0], dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.text_features(list(texts))[0], dim=-1)


class SceneClipStack(ImageTextEncoder):
    """S independent scene-clip stages whose normalised embeddings are concatenated / sqrt(S)."""

    def __init__(self, stages: list[SceneClip]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.stage_dim = stages[0].embed_dim
        self.embed_dim = self.stage_dim * len(stages)

    @property
    def logit_scale(self) -> torch.Tensor:  # the stages' mean log inverse temperature
        return torch.stack([s.logit_scale for s in self.stages]).mean()

    def _join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts, dim=-1) / math.sqrt(len(parts))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self._join([s.embed_images(images) for s in self.stages])

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self._join([s.embed_texts(texts) for s in self.stages])


@register("arch", "scene-clip", params=SceneClipParams)
def build_scene_clip(p: SceneClipParams, **arch_inputs: Any) -> ImageTextEncoder:
    """Build ``scene-clip`` from its YAML params (see :class:`SceneClipParams`)."""
    channels = int(arch_inputs.get("in_channels", 3))
    if channels != 3:
        raise ClBenchError(f"arch scene-clip embeds RGB images; the task's data has {channels} channel(s)")
    size = tuple(arch_inputs.get("image_size", (64, 64)))
    if any(n < 1 for n in p.image_blocks):
        raise ClBenchError(f"arch scene-clip: every entry of 'image_blocks' must be >= 1, got {p.image_blocks}")
    if p.stages == 1:
        return SceneClip(p, size)
    return SceneClipStack([SceneClip(p, size) for _ in range(p.stages)])
