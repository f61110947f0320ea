"""``lm-pretrain``: next-token pretraining of a causal LM (e.g. ``tiny-gpt2``) on a text corpus.

The corpus (``train.data`` of the method, e.g. the ``lm-corpus`` dataset) is tokenized as one
stream (documents separated by the end-of-text token) and cut into blocks of ``block_size + 1``
tokens; every epoch visits the blocks in a seeded random order (``reshuffle_documents``: every
epoch re-concatenates the documents in a new seeded order before cutting, so a small corpus
cannot be learned as one fixed stream). Recipe fields used: ``epochs``,
``batch_size``, ``optimizer``, ``lr``, ``weight_decay``, ``schedule`` (cosine/constant),
``warmup_epochs``; objective params: ``block_size``, ``max_steps`` (caps the run), ``grad_clip``,
``reshuffle_documents``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.methods.objective import Objective
from cl_bench.methods.trainer import build_optimizer, clip_gradients, fit, lr_at_step
from cl_bench.specs import Strict, TrainRecipe, validate_params


class LMPretrainParams(Strict):
    block_size: int = Field(default=256, ge=8)
    max_steps: int | None = Field(default=None, ge=1)
    grad_clip: float = Field(default=1.0, gt=0)
    reshuffle_documents: bool = False


@dataclass
class LMTrainCard:
    objective: str
    steps: int
    tokens_seen: int
    corpus_tokens: int
    first_loss: float
    final_loss: float  # mean over the last 10% of steps
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def token_blocks(model: Any, documents: list[str], block_size: int) -> torch.Tensor:
    """The corpus as one token stream cut into [n_blocks, block_size + 1]."""
    return cut_blocks([model.tok_encode(doc) + [model.eot_token_id] for doc in documents], block_size)


def cut_blocks(encoded: list[list[int]], block_size: int) -> torch.Tensor:
    """Tokenized documents (each ending in end-of-text), in order, as [n_blocks, block_size + 1]."""
    stream = [t for doc in encoded for t in doc]
    n = len(stream) // (block_size + 1)
    if n == 0:
        raise ClBenchError(
            f"the training corpus has {len(stream)} tokens: fewer than one block of {block_size + 1}"
        )
    return torch.tensor(stream[: n * (block_size + 1)], dtype=torch.long).view(n, block_size + 1)


@register("objective", "lm-pretrain")
class LMPretrain(Objective):
    """Next-token cross-entropy; trains through its own ``train_model`` (not the image trainer)."""

    @staticmethod
    def train_model(
        model: Any, recipe: TrainRecipe, split: Any, num_classes: int, seed: int,
        device: torch.device, progress: bool,
    ) -> LMTrainCard:
        p = validate_params(LMPretrainParams, recipe.params, "train.params (lm-pretrain)")
        documents = getattr(split, "documents", None)
        if documents is None:
            raise ClBenchError("lm-pretrain needs a text corpus: set the method's train.data (e.g. {name: lm-corpus})")
        if p.block_size > model.max_length:
            raise ClBenchError(f"train.params.block_size {p.block_size} exceeds the model's context {model.max_length}")
        encoded = [model.tok_encode(doc) + [model.eot_token_id] for doc in documents]
        blocks = cut_blocks(encoded, p.block_size)
        gen = torch.Generator().manual_seed(seed)
        per_epoch = math.ceil(len(blocks) / recipe.batch_size)
        total = per_epoch * recipe.epochs if p.max_steps is None else min(p.max_steps, per_epoch * recipe.epochs)
        warmup = min(recipe.warmup_epochs * per_epoch, total)
        params = [q for q in model.parameters() if q.requires_grad]
        opt = build_optimizer(params, recipe)

        def batches(epoch: int) -> Iterator[torch.Tensor]:
            nonlocal blocks
            if p.reshuffle_documents and epoch:  # each later pass cuts the documents in a new order
                blocks = cut_blocks([encoded[i] for i in torch.randperm(len(encoded), generator=gen).tolist()],
                                    p.block_size)
            order = torch.randperm(len(blocks), generator=gen)
            for b in range(0, len(order), recipe.batch_size):
                yield blocks[order[b : b + recipe.batch_size]].to(device)

        def loss(batch: torch.Tensor) -> torch.Tensor:
            logits = model.hf(input_ids=batch[:, :-1]).logits
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))

        model.train()
        log = fit(
            opt, total=total, batches=batches, loss=loss, lr_at=lambda step: lr_at_step(step, total, warmup, recipe),
            before_step=[clip_gradients(params, p.grad_clip)], progress="lm-pretrain" if progress else None,
        )
        model.eval()
        losses = log.losses()
        tail = losses[-max(1, len(losses) // 10) :]
        return LMTrainCard(
            objective="lm-pretrain", steps=log.steps, tokens_seen=log.steps * recipe.batch_size * p.block_size,
            corpus_tokens=int(blocks.numel()), first_loss=losses[0], final_loss=sum(tail) / len(tail),
            seconds=round(log.wall_s, 3),
        )
