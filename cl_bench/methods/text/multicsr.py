"""MultiCSR (Wang et al., NAACL 2024, arXiv 2310.10962: "Large Language Models can Contrastively
Refine their Generation for Better Sentence Representation Learning"), objective ``multicsr``.

Three stages, each refining what an LLM generates (Circle-Ming/MultiCSR):

1. a causal LM (``generator``: any method providing ``causal_lm``; embedded: ``tiny-lm-facts``)
   writes an entailment and a contradiction of each premise and scores both pairs;
2. self-curation keeps the well-scored triplets (:mod:`cl_bench.methods.text.multicsr_data`);
3. in-batch training of a SimCSE-style encoder on (premise, positive, hard negative) triplets,
   where a frozen pre-trained sentence encoder (``mask_model``; the authors use unsupervised
   SimCSE of the same backbone) masks false negatives.

The stage-3 loss is the authors' ``cl_masked_forward`` (``simcse/models.py``). With ``h`` the
trained encoder's and ``g`` the mask model's embeddings of the premises ``x``, positives ``x+``
and negatives ``x-`` of a batch of ``B`` triplets, ``t`` the temperature:

- ``s_ij = cos(h(x_i), h(c_j)) / t`` and ``m_ij = cos(g(x_i), g(c_j))`` over the ``2B`` candidates
  ``c = [x+_1..x+_B, x-_1..x-_B]``;
- ``w_ij = 0`` where ``m_ij > phi`` (a candidate the mask model finds too similar: a false
  negative), else 1; ``w_ii = 1`` for the own positive. (The code writes the threshold on
  ``m/t`` as ``phi * 20``, i.e. ``phi / 0.05``; as a cosine it is ``phi``.)
- ``p_i = softmax_j(s_ij * w_ij)``: a masked logit becomes 0, not -inf, as in the code;
- ``loss = -mean_ij [ y_ij log p_ij + (1 - y_ij) log(1 - p_ij) ]`` with ``y_ij = 1`` iff ``j = i``
  (a binary cross-entropy over the softmax entries, averaged over all ``B x 2B`` entries, as in
  the code; ``1 - p`` is clamped at 1e-12 so a masked entry near 1 cannot make it infinite).

``refine: false`` is the ablation without MultiCSR's refinement: the raw generations, no scoring,
no curation and no mask (``w = 1``). Generation runs once per (generator weights, premises) in a
process; the training card records the stage statistics and, in the fact world, how often a
positive states the premise's fact and a negative does not, before and after curation.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.methods.text import multicsr_data as stages
from cl_bench.methods.objective import Objective
from cl_bench.methods.text.trainer import TextTrainCard, TextTrainParams, check_text_training, train_text_encoder
from cl_bench.models.members import MemberRef, obtain_member
from cl_bench.specs import TrainRecipe


def multicsr_loss(
    z1: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor,
    m1: torch.Tensor | None, m2: torch.Tensor | None, m3: torch.Tensor | None,
    temperature: float, phi: float,
) -> torch.Tensor:
    """Stage 3's loss (see the module doc); ``m*`` None: no false-negative mask."""
    cand = F.normalize(torch.cat([z2, z3]), dim=-1)
    sim = F.normalize(z1, dim=-1) @ cand.T / temperature  # [B, 2B]
    b = z1.shape[0]
    if m1 is None:
        weights = torch.ones_like(sim)
    else:
        mask_sim = F.normalize(m1, dim=-1) @ F.normalize(torch.cat([m2, m3]), dim=-1).T
        weights = (mask_sim <= phi).to(sim.dtype)
        weights[:, :b] = torch.maximum(weights[:, :b], torch.eye(b, dtype=sim.dtype, device=sim.device))
    logits = sim * weights
    log_p = F.log_softmax(logits, dim=-1)
    target = torch.zeros_like(sim)
    target[:, :b] = torch.eye(b, dtype=sim.dtype, device=sim.device)
    log_not_p = torch.log((1 - log_p.exp()).clamp_min(1e-12))
    return -(target * log_p + (1 - target) * log_not_p).mean()


class MultiCSRParams(TextTrainParams):
    generator: MemberRef = Field(default_factory=lambda: MemberRef(method="tiny-lm-facts"))
    mask_model: MemberRef | None = None  # None: no false-negative mask
    refine: bool = True  # stages 1-2 scoring and curation, and the stage-3 mask
    n_premises: int = Field(default=1000, ge=8, le=1_000_000)
    premise_seed: int = 0  # which corpus sentences are premises (fixed across training seeds)
    max_new_tokens: int = Field(default=48, ge=4, le=512)
    positive_line: float = 3.0
    negative_line: float = 3.0
    similarity_gap: bool = True
    phi: float = Field(default=0.95, gt=-1, le=1)
    generation_batch: int = Field(default=32, ge=1)


@dataclass
class MultiCSRCard:
    train: TextTrainCard
    stages: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.train.to_json(), "multicsr": self.stages}


_GENERATED: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def _generated(fingerprint: str, premises: tuple[str, ...], max_new_tokens: int, batch: int, lm: Any) -> tuple[Any, ...]:
    """Stage 1's LM output, once per (generator weights, premises) in a process: every run obtains
    its own generator object, so the key is the weights' fingerprint, not the object (the 4 latest kept)."""
    key = (fingerprint, premises, max_new_tokens, batch)
    if key not in _GENERATED:
        while len(_GENERATED) >= 4:
            _GENERATED.pop(next(iter(_GENERATED)))
        _GENERATED[key] = tuple(stages.generate_and_score(lm, list(premises), max_new_tokens, batch))
    return _GENERATED[key]


def pick_premises(texts: list[str], n: int, seed: int) -> list[str]:
    """``n`` distinct sentences of the corpus, chosen by ``seed``."""
    unique = sorted(set(texts))
    if len(unique) < n:
        raise ClBenchError(f"multicsr: the corpus has {len(unique)} distinct sentences, fewer than n_premises={n}")
    return random.Random(f"multicsr-premises:{seed}").sample(unique, n)


@register("objective", "multicsr", params=MultiCSRParams)
class MultiCSR(Objective):
    name = "multicsr"

    def __init__(self, embed_dim: int = 0, num_classes: int = 0, **params: Any) -> None:
        super().__init__(embed_dim, num_classes, **params)
        self.rows: list[stages.Triplet] = []
        self.mask: np.ndarray | None = None  # [n, 3, D] frozen mask-model embeddings of each triplet

    def steps_per_epoch(self, split: Any, batch_size: int) -> int:
        return len(self.rows) // batch_size

    def make_batches(self, split: Any, batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
        order = torch.randperm(len(self.rows), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield order[start : start + batch_size]

    def loss(self, encoder: Any, batch: list[int]) -> tuple[torch.Tensor, int]:
        rows = [self.rows[i] for i in batch]
        z = encoder.encode([r.premise for r in rows] + [r.positive for r in rows] + [r.negative for r in rows])
        b = len(rows)
        m: list[torch.Tensor | None] = [None, None, None]
        if self.mask is not None:
            block = torch.from_numpy(self.mask[batch]).to(z.device)
            m = [block[:, 0], block[:, 1], block[:, 2]]
        value = multicsr_loss(z[:b], z[b : 2 * b], z[2 * b :], m[0], m[1], m[2], self.params.temperature, self.params.phi)
        return value, 3 * b

    def prepare(self, split: Any, members: Any = None) -> dict[str, Any]:
        """Stages 1-2 (and the mask embeddings): fills ``rows``; returns the stage statistics."""
        p = self.params
        t0 = time.perf_counter()
        got = obtain_member(p.generator, "generator", "causal_lm", members)
        texts = sorted(set(split.texts))
        fit = stages.premise_fits(got.model, texts, p.max_new_tokens)  # the generator's context bounds a premise
        if sum(fit) < p.n_premises:
            raise ClBenchError(
                f"multicsr: only {sum(fit)} of the corpus's {len(texts)} distinct sentences leave room for an answer "
                f"in the generator's context after the generation prompts; lower n_premises (now {p.n_premises}) or "
                "use a generator with a longer context"
            )
        premises = pick_premises([t for t, f in zip(texts, fit, strict=True) if f], p.n_premises, p.premise_seed)
        generated = _generated(got.fingerprint, tuple(premises), p.max_new_tokens, p.generation_batch, got.model)
        info: dict[str, Any] = {"generator": {"method": p.generator.method, "fingerprint": got.fingerprint},
                                "premises": len(premises), "sentences_too_long": fit.count(False),
                                "generation_s": round(time.perf_counter() - t0, 2)}
        raw = stages.unrefined_rows(generated)
        info["unrefined"] = stages.pair_quality(raw)
        if p.refine:
            first = stages.stage1_rows(generated)
            self.rows = stages.curate(first, p.positive_line, p.negative_line, p.similarity_gap)
            info["stage1"] = stages.pair_quality(first)
            info["curated"] = stages.pair_quality(self.rows)
        else:
            self.rows = raw
        if p.refine and p.mask_model is not None:
            masker = obtain_member(p.mask_model, "mask_model", "text_encoder", members)
            texts = [t for r in self.rows for t in (r.premise, r.positive, r.negative)]
            emb = masker.model.embed_texts(texts) if texts else np.zeros((0, 1), np.float32)
            self.mask = emb.reshape(len(self.rows), 3, -1)
            info["mask_model"] = {"method": p.mask_model.method, "fingerprint": masker.fingerprint}
        digest = hashlib.sha256("\n".join(f"{r.premise}\t{r.positive}\t{r.negative}" for r in self.rows).encode())
        info["training_triplets_sha256"] = digest.hexdigest()
        return info

    @staticmethod
    def train_model(
        model: Any, recipe: TrainRecipe, split: Any, num_classes: int, seed: int,
        device: torch.device, progress: bool = False, members: Any = None,
    ) -> MultiCSRCard:
        check_text_training(model, split, "multicsr")
        objective = MultiCSR(**recipe.params)
        info = objective.prepare(split, members)
        if len(objective.rows) < recipe.batch_size:
            raise ClBenchError(
                f"multicsr: {len(objective.rows)} triplets survived generation and curation, fewer than one batch "
                f"of {recipe.batch_size}; use more n_premises or a better generator"
            )
        card = train_text_encoder(model, objective, recipe, objective.params, split, seed, device, progress)
        return MultiCSRCard(card, info)

