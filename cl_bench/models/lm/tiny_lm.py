"""``tiny-gpt2``: a small GPT-2 built from a config in code (no download), with its own tokenizer.

The tokenizer is a byte-level BPE — GPT-2's scheme: every string is representable, a space
starts a new pre-token — trained in code with Hugging Face ``tokenizers`` on the project's
generated corpus (``cl_bench.data.text.lm_corpus``). Training it is deterministic, and its sha256 is
kept in the model as a buffer (``tokenizer_sha256``), so the weights' fingerprint covers the
tokenizer and a cached checkpoint trained with another tokenizer is refused.
The model is an ``HFCausalLM``: ``save_pretrained`` writes a directory any HF tool loads.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from cl_bench.components import register
from cl_bench.data.text.lm_corpus import LMCorpusParams, build_corpus
from cl_bench.errors import ClBenchError
from cl_bench.models.lm.hf_causal_lm import HFCausalLM
from cl_bench.specs import Strict, validate_params

EOT = "<|endoftext|>"


class TokenizerParams(Strict):
    vocab_size: int = Field(default=2048, ge=260, le=65536)
    corpus: LMCorpusParams = Field(default_factory=LMCorpusParams)


class TinyGPT2Params(Strict):
    n_layer: int = Field(default=4, ge=1)
    n_embd: int = Field(default=128, ge=8)
    n_head: int = Field(default=4, ge=1)
    n_positions: int = Field(default=512, ge=16)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    batch_size: int = Field(default=32, ge=1)
    tokenizer: TokenizerParams = Field(default_factory=TokenizerParams)


@functools.lru_cache(maxsize=4)
def _tokenizer_json(params_json: str) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    p = TokenizerParams.model_validate_json(params_json)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=p.vocab_size, special_tokens=[EOT], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(build_corpus(p.corpus).train.documents, trainer=trainer)
    return tok.to_str()


def build_tokenizer(p: TokenizerParams) -> Any:
    """A ``PreTrainedTokenizerFast`` (byte-level BPE, end-of-text ``<|endoftext|>``)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    obj = Tokenizer.from_str(_tokenizer_json(p.model_dump_json()))
    return PreTrainedTokenizerFast(tokenizer_object=obj, eos_token=EOT, bos_token=EOT, model_max_length=10**9)


def tokenizer_digest(tokenizer: Any) -> torch.Tensor:
    """sha256 of the tokenizer's vocabulary and merges, as 32 uint8."""
    blob = json.dumps(json.loads(tokenizer.backend_tokenizer.to_str())["model"], sort_keys=True)
    return torch.tensor(list(hashlib.sha256(blob.encode()).digest()), dtype=torch.uint8)


class TinyGPT2(HFCausalLM):
    """A GPT-2 built from ``TinyGPT2Params`` with untied input/output embeddings (safetensors-friendly)."""

    def __init__(self, p: TinyGPT2Params) -> None:
        from transformers import GPT2Config, GPT2LMHeadModel

        if p.n_embd % p.n_head:
            raise ClBenchError(f"arch tiny-gpt2: n_embd ({p.n_embd}) must be divisible by n_head ({p.n_head})")
        tok = build_tokenizer(p.tokenizer)
        eot = tok.convert_tokens_to_ids(EOT)
        cfg = GPT2Config(
            vocab_size=len(tok), n_positions=p.n_positions, n_embd=p.n_embd, n_layer=p.n_layer,
            n_head=p.n_head, resid_pdrop=p.dropout, embd_pdrop=p.dropout, attn_pdrop=p.dropout,
            bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=False,
        )
        super().__init__(GPT2LMHeadModel(cfg).eval(), tok, batch_size=p.batch_size)
        self.register_buffer("tokenizer_sha256", tokenizer_digest(tok))
        self.register_load_state_dict_post_hook(_check_tokenizer)

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        report = super().load_checkpoint(path)
        self.tokenizer_sha256 = tokenizer_digest(self.tokenizer)
        return report


def _check_tokenizer(module: TinyGPT2, incompatible: Any) -> None:
    expected = tokenizer_digest(module.tokenizer)
    if not torch.equal(module.tokenizer_sha256.cpu(), expected):
        raise ClBenchError(
            "these tiny-gpt2 weights were trained with a different tokenizer; clear the cache entry or retrain"
        )


@register("arch", "tiny-gpt2")
def build_tiny_gpt2(params: dict[str, Any], **_: Any) -> TinyGPT2:
    return TinyGPT2(validate_params(TinyGPT2Params, params, "arch tiny-gpt2 params"))
