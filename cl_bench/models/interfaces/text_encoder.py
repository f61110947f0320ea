"""The ``TextEncoder`` interface: sentences in, one embedding per sentence out.

Every text encoder (a sentence-transformers model, a Hugging Face ``AutoModel`` with a pooling
rule, the bundled all-MiniLM-L6-v2) exposes the same small surface:

- ``encode(texts)``: a differentiable forward pass (respects train/eval mode, so dropout is on
  while training: SimCSE relies on it) -> tensor [N, D];
- ``embed_texts(texts, batch_size)``: frozen embeddings as float32 numpy [N, D], computed in
  batches of similar length (fewer pad tokens) and returned in the input order;
- ``embed_split(split, device)``: what the engine's feature cache calls for a split that has
  ``.texts`` and ``.fingerprint``.

Subclasses implement two primitives: ``tokenize(texts)`` (a dict of tensors) and
``pool(features)`` (token features -> [B, D]). Settings that change the embedding without
changing any weight (pooling, instruction prefix, truncation, normalisation) are hashed into a
non-persistent buffer, so the model fingerprint (and the feature cache key) tells them apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.errors import ClBenchError
from cl_bench.extract import EmbedPlan, collect


class TextEncoderParams(BaseModel):
    """Settings shared by every text-encoder arch (unknown fields are errors)."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = ""  # an instruction prepended to every text (e5 / instructor style)
    max_length: int | None = Field(default=None, ge=1)  # tokens; None: the model's own limit
    normalize: bool | None = None  # L2-normalise the output; None: the model's own default
    batch_size: int = Field(default=64, ge=1)


class TextEncoder(nn.Module):
    """Base class of every text encoder adapter; see the module docstring."""

    embed_dim: int
    prefix: str = ""
    max_length: int = 256
    normalize: bool = False
    batch_size: int = 64

    def configure(self, settings: dict[str, Any]) -> None:
        """Record the output-changing settings in a buffer that enters the model fingerprint."""
        blob = json.dumps({"class": type(self).__name__, **settings}, sort_keys=True, default=str)
        digest = hashlib.sha256(blob.encode()).digest()
        tag = torch.tensor(list(digest), dtype=torch.uint8)
        if "settings_tag" in self._buffers:
            self._buffers["settings_tag"] = tag
        else:
            self.register_buffer("settings_tag", tag, persistent=False)

    # --- primitives a subclass implements ------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def pool(self, features: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        """Sentence embeddings [B, D] of tokenized features already on the model's device."""
        raise NotImplementedError

    # --- what trainers and protocols call ------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Differentiable embeddings [N, D] of ``texts`` (prefix, truncation, pooling, norm)."""
        batch = [self.prefix + t for t in texts]
        feats = self.tokenize(batch)
        device = self.device
        feats = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}
        out = self.pool(feats)
        return F.normalize(out, dim=-1) if self.normalize else out

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return self.encode(texts)

    def embed_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Frozen float32 embeddings [N, D], in the order of ``texts``."""
        return collect(self._text_plan(texts, batch_size), self.embed_dim)

    def _text_plan(self, texts: Sequence[str], batch_size: int | None = None) -> EmbedPlan:
        """Batches of similar length (longest first), each row written back to its own place."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ClBenchError(f"text #{i} is {type(t).__name__}, not a string")
        bs = batch_size or self.batch_size
        order = np.asarray(sorted(range(len(texts)), key=lambda i: -len(texts[i])), dtype=np.int64)

        def run(start: int) -> Iterator[torch.Tensor]:
            was_training = self.training
            self.eval()
            try:
                with torch.inference_mode():
                    for s in range(start, len(order), bs):
                        yield self.encode([texts[i] for i in order[s : s + bs]])
            finally:
                self.train(was_training)

        return EmbedPlan(len(texts), bs, run, order)

    def embed_plan(self, split: Any, device: torch.device, feeder: Any = None) -> EmbedPlan:
        """The engine's hook: how to embed ``split.texts`` (the split carries a fingerprint)."""
        texts = getattr(split, "texts", None)
        if texts is None:
            raise ClBenchError(f"a text encoder cannot embed {type(split).__name__}: it has no texts")
        if len(texts) == 0:
            raise ClBenchError("the text split is empty: nothing to embed")
        self.to(device)
        return self._text_plan(texts)

    def embed_split(self, split: Any, device: torch.device) -> np.ndarray:
        """Embeddings of ``split.texts`` in memory (what :meth:`embed_plan` streams)."""
        return collect(self.embed_plan(split, device), self.embed_dim)
