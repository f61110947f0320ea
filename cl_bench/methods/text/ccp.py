"""Contrastive context prediction (CCP; Wu et al., IJCAI 2022, arXiv 2206.03281), objective ``ccp``.

A document is a sequence of sentences; a sentence within ``window`` positions of a centre
sentence (same document) is its context. CCP encodes the centre and one sampled context
sentence and asks each to pick the other among random negatives, in both directions (InfoNCE,
cosine / temperature). The negatives are the other pairs of the batch plus a memory bank of
recent context embeddings (detached; one bank, as the corpus here has one language — the paper
keeps one bank per language). An asymmetric batch normalisation (BatchNorm1d without affine
parameters, on the context side only, as a discarded training head) keeps batch statistics from
leaking an easy shortcut between the two sides. The paper's post-hoc embedding calibration and
its multilingual corpus are out of scope: here CCP fine-tunes the bundled MiniLM on the
generated ``text-corpus`` documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.methods.objective import Objective
from cl_bench.methods.text.trainer import (
    TextTrainCard,
    TextTrainParams,
    check_text_training,
    train_text_encoder,
)
from cl_bench.models.interfaces.text_encoder import TextEncoder
from cl_bench.specs import TrainRecipe, validate_params


class CCPParams(TextTrainParams):
    window: int = Field(default=2, ge=1)  # context = sentences at distance 1..window in the document
    bank_size: int = Field(default=1024, ge=0)  # memory-bank negatives (0: in-batch only)
    asymmetric_bn: bool = True


def context_candidates(doc_ids: np.ndarray, window: int) -> list[np.ndarray]:
    """For each sentence, the indices of the sentences of its document within ``window`` positions."""
    n = len(doc_ids)
    out = []
    for i in range(n):
        lo, hi = max(0, i - window), min(n, i + window + 1)
        out.append(np.array([j for j in range(lo, hi) if j != i and doc_ids[j] == doc_ids[i]], dtype=np.int64))
    return out


@register("objective", "ccp")
class CCP(Objective):
    name = "ccp"

    def __init__(self, embed_dim: int = 0, num_classes: int = 0, **params: Any) -> None:
        super().__init__(embed_dim, num_classes)
        self.params = validate_params(CCPParams, params, "train.params of objective ccp")
        self.bn = nn.BatchNorm1d(embed_dim, affine=False) if self.params.asymmetric_bn and embed_dim else None
        self.register_buffer("bank", torch.zeros(0, max(embed_dim, 1)), persistent=False)
        self._cands: list[np.ndarray] | None = None

    def _candidates(self, split: Any) -> list[np.ndarray]:
        if self._cands is None:
            if getattr(split, "doc_ids", None) is None:
                raise ClBenchError("objective ccp needs documents: train on a corpus with doc_ids (e.g. text-corpus)")
            self._cands = context_candidates(split.doc_ids, self.params.window)
        return self._cands

    def steps_per_epoch(self, split: Any, batch_size: int) -> int:
        centres = sum(1 for c in self._candidates(split) if len(c))
        return centres // batch_size

    def make_batches(self, split: Any, batch_size: int, generator: torch.Generator) -> Iterator[tuple[list[str], list[str]]]:
        cands = self._candidates(split)
        centres = [i for i in torch.randperm(len(cands), generator=generator).tolist() if len(cands[i])]
        for start in range(0, len(centres) - batch_size + 1, batch_size):
            chosen = centres[start : start + batch_size]
            picks = torch.randint(0, 1 << 30, (len(chosen),), generator=generator).tolist()
            ctx = [int(cands[i][r % len(cands[i])]) for i, r in zip(chosen, picks, strict=True)]
            yield [split.texts[i] for i in chosen], [split.texts[j] for j in ctx]

    def loss(self, encoder: TextEncoder, batch: tuple[list[str], list[str]]) -> tuple[torch.Tensor, int]:
        centres, contexts = batch
        z = encoder.encode(centres + contexts)
        zc, zx = z[: len(centres)], z[len(centres) :]
        if self.bn is not None:
            zx = self.bn(zx)
        zc, zx = F.normalize(zc, dim=-1), F.normalize(zx, dim=-1)
        t = self.params.temperature
        bank = self.bank.to(zc.device) if len(self.bank) else zc.new_zeros(0, zc.shape[1])
        target = torch.arange(len(zc), device=zc.device)
        loss_c = F.cross_entropy(torch.cat([zc @ zx.T, zc @ bank.T], dim=1) / t, target)
        loss_x = F.cross_entropy(torch.cat([zx @ zc.T, zx @ bank.T], dim=1) / t, target)
        if self.params.bank_size:
            self.bank = torch.cat([zx.detach(), bank])[: self.params.bank_size]
        return (loss_c + loss_x) / 2, 2 * len(centres)

    @staticmethod
    def train_model(
        model: Any, recipe: TrainRecipe, split: Any, num_classes: int, seed: int,
        device: torch.device, progress: bool = False,
    ) -> TextTrainCard:
        check_text_training(model, split, "ccp")
        objective = CCP(embed_dim=int(model.embed_dim), **recipe.params)
        return train_text_encoder(model, objective, recipe, objective.params, split, seed, device, progress)
