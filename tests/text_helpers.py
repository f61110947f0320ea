"""Helpers for the text tests: a tiny BERT saved as a local HF directory (MiniLM's tokenizer)."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_bert(folder: Path, seed: int = 0, padding_side: str = "right") -> Path:
    """A 2-layer, 32-wide BERT with random weights and all-MiniLM-L6-v2's real tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from cl_bench.models.text.text_encoders import minilm_dir

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
    tok.padding_side = padding_side
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    model = BertModel(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder
