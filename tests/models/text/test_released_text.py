"""Released text encoders (SimCSE): each princeton-nlp checkpoint through hf-text-encoder with the
pooling their tool.py uses for it (unsupervised: [CLS] before the pooler; supervised: the pooler)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cl_bench.registry import Registry
from tests.models.weights.test_released_methods import obtain
from tests.text_helpers import save_tiny_bert

SIMCSE = [f"simcse-{a}-{k}" for a in ("bert-base", "bert-large", "roberta-base", "roberta-large") for k in ("unsup", "sup")]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("simcse") / "unsup-simcse-bert-base-uncased", seed=3)


def test_every_simcse_release_is_a_method_with_its_pooling() -> None:
    reg = Registry()
    for mid in SIMCSE:
        spec = reg.method(mid)
        assert spec.arch.name == "hf-text-encoder" and spec.released is not None
        assert spec.arch.params["pooling"] == ("cls" if mid.endswith("-unsup") else "pooler"), mid
        assert spec.released.source.startswith("https://huggingface.co/princeton-nlp/")


@pytest.mark.parametrize("mid", ["simcse-bert-base-unsup", "simcse-bert-base-sup"])
def test_simcse_embedding_is_their_pooler_choice(bert_dir: Path, tmp_path: Path, mid: str) -> None:
    """tool.py: ``outputs.last_hidden_state[:, 0]`` (cls_before_pooler) or ``outputs.pooler_output`` (cls)."""
    from transformers import AutoModel, AutoTokenizer

    got = obtain(mid, bert_dir, tmp_path)
    assert got.source == "checkpoint" and got.checkpoint["path"] == str(bert_dir)
    texts = ["a man is playing a guitar", "two dogs run on the beach in the sun"]
    model = AutoModel.from_pretrained(str(bert_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(bert_dir))
    with torch.no_grad():
        out = model(**tok(texts, padding=True, return_tensors="pt"))
        want = out.last_hidden_state[:, 0] if mid.endswith("-unsup") else out.pooler_output
    have = torch.from_numpy(got.model.embed_texts(texts))
    torch.testing.assert_close(have, F.normalize(want, dim=-1), rtol=1e-4, atol=1e-5)
