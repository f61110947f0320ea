"""Masked language modelling (BERT, Devlin et al. 2019, arXiv 1810.04805), objective ``mlm``.

Pretrains a Hugging Face encoder wrapped as a text encoder (``tiny-bert``) from scratch, so the
text methods can start from an encoder that was never trained contrastively. Per batch of
sentences: 15 % of the non-special tokens are chosen; of those 80 % become ``[MASK]``, 10 % a
random token, 10 % stay (transformers' ``DataCollatorForLanguageModeling``, seeded); the loss
is the cross-entropy of the original token at the chosen positions (the head runs there only). The prediction head is
BERT's (dense -> GELU -> LayerNorm -> decoder tied to the input embeddings + bias); it belongs
to the objective and is discarded after training. Batches are a seeded shuffle of the corpus
sentences; the shared text trainer runs the steps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.methods.objective import Objective
from cl_bench.methods.text.simcse import SimCSE
from cl_bench.methods.text.trainer import TextTrainCard, TextTrainParams, check_text_training, train_text_encoder
from cl_bench.specs import TrainRecipe, validate_params


class MLMParams(TextTrainParams):
    mlm_probability: float = Field(default=0.15, gt=0, lt=1)


class MLMHead(nn.Module):
    """BERT's prediction head; the decoder weight is the encoder's word-embedding matrix (tied)."""

    def __init__(self, hidden: int, vocab: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, states: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(F.gelu(self.dense(states))), embeddings, self.bias)


@register("objective", "mlm")
class MaskedLM(Objective):
    name = "mlm"

    def __init__(self, embed_dim: int = 0, num_classes: int = 0, **params: Any) -> None:
        super().__init__(embed_dim, num_classes)
        self.params = validate_params(MLMParams, params, "train.params of objective mlm")
        self.head: MLMHead | None = None
        self.collator: Any = None

    def attach(self, encoder: Any, seed: int) -> None:
        """Build the head for ``encoder``'s width and vocabulary, and the seeded masker."""
        from transformers import DataCollatorForLanguageModeling

        model, tok = getattr(encoder, "model", None), getattr(encoder, "tokenizer", None)
        if model is None or tok is None or getattr(tok, "mask_token", None) is None:
            raise ClBenchError("objective 'mlm' trains a Hugging Face encoder with a [MASK] token (e.g. arch tiny-bert)")
        cfg = model.config
        self.head = MLMHead(cfg.hidden_size, cfg.vocab_size, getattr(cfg, "layer_norm_eps", 1e-12))
        self.collator = DataCollatorForLanguageModeling(tok, mlm_probability=self.params.mlm_probability)
        # torch_mask_tokens draws from .generator (None: the global RNG); the collator's own seeding
        # happens in __call__ and refuses non-DataLoader subprocesses, so the generator is set here
        self.collator.generator = torch.Generator().manual_seed(seed)

    # the same seeded shuffle of the corpus sentences as SimCSE
    steps_per_epoch = SimCSE.steps_per_epoch
    make_batches = SimCSE.make_batches

    def loss(self, encoder: Any, batch: list[str]) -> tuple[torch.Tensor, int]:
        assert self.head is not None, "call attach() first"
        feats = encoder.tokenizer(
            batch, padding=True, truncation=True, max_length=encoder.max_length,
            return_tensors="pt", return_special_tokens_mask=True,
        )
        special = feats.pop("special_tokens_mask")
        inputs, labels = self.collator.torch_mask_tokens(feats["input_ids"].clone(), special)
        device = encoder.device
        out = encoder.model(
            input_ids=inputs.to(device), attention_mask=feats["attention_mask"].to(device),
            **({"token_type_ids": feats["token_type_ids"].to(device)} if "token_type_ids" in feats else {}),
        )
        chosen = (labels != -100).to(device)
        if not bool(chosen.any()):  # nothing masked in this batch: a zero loss that keeps the graph
            return out.last_hidden_state.sum() * 0.0, len(batch)
        # the head only at the chosen positions (the others carry no loss)
        logits = self.head(out.last_hidden_state[chosen], encoder.model.get_input_embeddings().weight)
        return F.cross_entropy(logits, labels.to(device)[chosen]), len(batch)

    @staticmethod
    def train_model(
        model: Any, recipe: TrainRecipe, split: Any, num_classes: int, seed: int,
        device: torch.device, progress: bool = False,
    ) -> TextTrainCard:
        check_text_training(model, split, "mlm")
        objective = MaskedLM(**recipe.params)
        objective.attach(model, seed)
        return train_text_encoder(model, objective, recipe, objective.params, split, seed, device, progress)
