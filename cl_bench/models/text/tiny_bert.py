"""``tiny-bert``: a small BERT built from a config in code (no download), as a text encoder.

The text methods that fine-tune the bundled all-MiniLM-L6-v2 start from a model that is already
contrastively trained (sentence-transformers trained it on 1 B sentence pairs), which hides
what their own objective adds. ``tiny-bert`` is a BERT that never saw a contrastive loss: a
``BertModel`` from a ``BertConfig`` (default 2 layers, 128 wide, 2 heads, 64 positions),
randomly initialised, with an uncased WordPiece tokenizer (BERT's scheme: ``[CLS] ... [SEP]``,
``##`` continuations, ``[MASK]``) whose vocabulary is built in code from the generated text
corpus (at most 1,024 tokens: the embedded world's vocabulary is small, and a 30k-token softmax
would dominate the cost of masked-LM pretraining on a CPU). Building it is deterministic across
processes and its sha256 is a buffer of the model (``tokenizer_sha256``), so the fingerprint
covers it and weights trained with another tokenizer are refused. ``tiny-bert-mlm`` (baselines/) pretrains it by masked
language modelling on the generated text corpus; SimCSE, MultiCSR... start from that checkpoint
through ``init`` (a member: the method's trained weights, obtained and cached like any run).

Pooling (``mean`` by default; ``cls``), truncation and normalisation are the text-encoder
settings every ``HFTextEncoder`` has.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.members import MemberRef, init_from_member
from cl_bench.models.interfaces.text_encoder import TextEncoderParams
from cl_bench.models.text.text_encoders import HFTextEncoder, Pooling
from cl_bench.specs import Strict, validate_params


class WordPieceParams(Strict):
    vocab_size: int = Field(default=1024, ge=128, le=65536)
    corpus_docs: int = Field(default=2000, ge=1, le=100_000)  # text-corpus documents it is trained on
    corpus_seed: int = 0


class TinyBertParams(TextEncoderParams):
    n_layer: int = Field(default=2, ge=1, le=24)
    hidden: int = Field(default=128, ge=16, le=2048)
    n_head: int = Field(default=2, ge=1, le=64)
    intermediate: int = Field(default=512, ge=16, le=16384)
    max_positions: int = Field(default=64, ge=8, le=4096)
    tokenizer: WordPieceParams = Field(default_factory=WordPieceParams)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    pooling: Pooling = "mean"
    init: MemberRef | None = None  # start from this method's trained tiny-bert (same shape)


SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@functools.lru_cache(maxsize=4)
def _tokenizer_json(params_json: str) -> str:
    """A WordPiece tokenizer whose vocabulary is built here, deterministically: the special
    tokens, every character of the corpus and its ``##`` continuation (sorted), then whole words
    by descending count (ties alphabetical) up to ``vocab_size``. (The ``tokenizers`` WordPiece
    trainer breaks count ties in a hash order that differs between processes.)"""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    from cl_bench.data.text.text_corpus import generate_documents

    p = WordPieceParams.model_validate_json(params_json)
    normalizer, pre = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    texts, _ = generate_documents(p.corpus_docs, 4, 8, p.corpus_seed)
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab = list(SPECIAL) + chars + [f"##{c}" for c in chars]
    vocab += [w for w, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1]
    vocab = vocab[: max(p.vocab_size, len(SPECIAL) + 2 * len(chars))]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre, decoders.WordPiece()
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return tok.to_str()


def build_tokenizer(p: WordPieceParams) -> Any:
    """A ``PreTrainedTokenizerFast`` with BERT's special tokens, right padding."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(p.model_dump_json())),
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=10**9, model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    tok.padding_side = "right"
    return tok


def tokenizer_digest(tokenizer: Any) -> torch.Tensor:
    """sha256 of the tokenizer's vocabulary, as 32 uint8."""
    blob = json.dumps(json.loads(tokenizer.backend_tokenizer.to_str())["model"], sort_keys=True)
    return torch.tensor(list(hashlib.sha256(blob.encode()).digest()), dtype=torch.uint8)


def _check_tokenizer(module: nn.Module, incompatible: Any) -> None:
    if not torch.equal(module.tokenizer_sha256.cpu(), tokenizer_digest(module.tokenizer)):
        raise ClBenchError("these tiny-bert weights were trained with a different tokenizer; clear the cache entry or retrain")


@register("arch", "tiny-bert")
def build_tiny_bert(params: dict[str, Any], members: Any = None, **_: Any) -> HFTextEncoder:
    from transformers import BertConfig, BertModel

    p = validate_params(TinyBertParams, params, "arch tiny-bert params")
    if p.hidden % p.n_head:
        raise ClBenchError(f"arch tiny-bert: hidden ({p.hidden}) must be divisible by n_head ({p.n_head})")
    tok = build_tokenizer(p.tokenizer)
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=p.hidden, num_hidden_layers=p.n_layer, num_attention_heads=p.n_head,
        intermediate_size=p.intermediate, max_position_embeddings=p.max_positions,
        hidden_dropout_prob=p.dropout, attention_probs_dropout_prob=p.dropout, pad_token_id=tok.pad_token_id,
    )
    model = BertModel(cfg, add_pooling_layer=False).eval()
    max_length = min(p.max_length or p.max_positions, p.max_positions)
    enc = HFTextEncoder(
        model, tok, folder=Path("."), pooling=p.pooling, prefix=p.prefix, max_length=max_length,
        normalize=bool(p.normalize), batch_size=p.batch_size,
    )
    enc.register_buffer("tokenizer_sha256", tokenizer_digest(tok))
    enc.register_load_state_dict_post_hook(_check_tokenizer)
    if p.init is not None:
        report = init_from_member(enc, p.init, "init", "text_encoder", members)
        enc.checkpoint_report = {"format": "member", **report}
        enc.members_key = report["fingerprint"]  # a cached fine-tune is keyed on the weights it started from
    return enc
