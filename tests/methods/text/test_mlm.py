"""Masked-LM pretraining and the tiny-bert arch: the loss equals Hugging Face's BertForMaskedLM on
the same masked batch and weights, masking never touches special tokens, the tokenizer is BERT's
scheme and deterministic, and an init member's weights land in the new model."""

from __future__ import annotations

import pytest
import torch

from cl_bench.data.text.text_corpus import load_text_corpus
from cl_bench.errors import ClBenchError
from cl_bench.methods.text.mlm import MaskedLM
from cl_bench.models.text.tiny_bert import build_tiny_bert, tokenizer_digest

SMALL = {"n_layer": 1, "hidden": 16, "n_head": 2, "intermediate": 32, "tokenizer": {"corpus_docs": 50}}


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_tiny_bert(SMALL)


def test_mlm_loss_equals_bert_for_masked_lm(encoder) -> None:
    from transformers import BertForMaskedLM, DataCollatorForLanguageModeling

    obj = MaskedLM(max_length=16)
    obj.attach(encoder, seed=7)
    torch.nn.init.normal_(obj.head.dense.weight)
    torch.nn.init.normal_(obj.head.bias)
    batch = ["The teacher found a red ball in the garden.", "A sailor sold the old car last night."] * 4
    encoder.eval()  # no dropout: both models see the same function
    got, n = obj.loss(encoder, batch)

    ref = BertForMaskedLM(encoder.model.config).eval()
    ref.bert.load_state_dict(encoder.model.state_dict(), strict=False)
    t = ref.cls.predictions
    t.transform.dense.load_state_dict(obj.head.dense.state_dict())
    t.transform.LayerNorm.load_state_dict(obj.head.norm.state_dict())
    t.decoder.weight = ref.bert.embeddings.word_embeddings.weight
    t.decoder.bias = obj.head.bias
    same = DataCollatorForLanguageModeling(encoder.tokenizer, mlm_probability=0.15)
    same.generator = torch.Generator().manual_seed(7)
    feats = encoder.tokenizer(batch, padding=True, truncation=True, max_length=encoder.max_length,
                              return_tensors="pt", return_special_tokens_mask=True)
    inputs, labels = same.torch_mask_tokens(feats["input_ids"].clone(), feats.pop("special_tokens_mask"))
    want = ref(input_ids=inputs, attention_mask=feats["attention_mask"], token_type_ids=feats["token_type_ids"],
               labels=labels).loss
    assert n == len(batch)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_masking_rate_and_specials(encoder) -> None:
    obj = MaskedLM(mlm_probability=0.15)
    obj.attach(encoder, seed=0)
    texts = load_text_corpus({"n_docs": 200}).train.texts[:512]
    feats = encoder.tokenizer(texts, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    special = feats["special_tokens_mask"].bool()
    _, labels = obj.collator.torch_mask_tokens(feats["input_ids"].clone(), feats["special_tokens_mask"])
    chosen = labels != -100
    assert not (chosen & special).any()  # [CLS], [SEP] and padding are never predicted
    rate = chosen.sum().item() / (~special).sum().item()
    assert 0.13 < rate < 0.17


def test_tokenizer_is_bert_style_and_deterministic(encoder) -> None:
    tok = encoder.tokenizer
    ids = tok("The lanky physician concealed a crimson ball.")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.mask_token == "[MASK]" and tok.pad_token_id is not None
    again = build_tiny_bert(SMALL)
    assert torch.equal(tokenizer_digest(again.tokenizer), tokenizer_digest(tok))
    assert torch.equal(encoder.tokenizer_sha256, tokenizer_digest(tok))


def test_weights_of_another_tokenizer_are_refused() -> None:
    """Same shapes, another vocabulary (another corpus seed, both cut to 150 tokens): the digest refuses it."""
    mine = build_tiny_bert({**SMALL, "tokenizer": {"corpus_docs": 50, "vocab_size": 150}})
    other = build_tiny_bert({**SMALL, "tokenizer": {"corpus_docs": 50, "vocab_size": 150, "corpus_seed": 1}})
    assert len(mine.tokenizer) == len(other.tokenizer) == 150
    assert mine.tokenizer.get_vocab() != other.tokenizer.get_vocab()
    with pytest.raises(ClBenchError, match="different tokenizer"):
        mine.load_state_dict(other.state_dict())
    mine.load_state_dict(build_tiny_bert({**SMALL, "tokenizer": {"corpus_docs": 50, "vocab_size": 150}}).state_dict())


def test_bad_shapes_and_non_bert_encoders_are_one_line_errors() -> None:
    with pytest.raises(ClBenchError, match="divisible"):
        build_tiny_bert({**SMALL, "hidden": 18, "n_head": 4})

    class NotBert:
        model = None
        tokenizer = None

    with pytest.raises(ClBenchError, match="MASK"):
        MaskedLM().attach(NotBert(), 0)


def test_init_member_weights_land_in_the_new_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import cl_bench.models.text.tiny_bert as tb

    trained = build_tiny_bert(SMALL)
    torch.nn.init.normal_(trained.model.embeddings.word_embeddings.weight)

    class Got:
        model = trained
        fingerprint = "f" * 64
        source = "trained"

    monkeypatch.setattr("cl_bench.models.members.obtain_member", lambda *a, **k: Got())
    built = tb.build_tiny_bert({**SMALL, "init": {"method": "x"}})
    for k, v in trained.state_dict().items():
        assert torch.equal(built.state_dict()[k], v), k
    assert built.members_key == "f" * 64 and built.checkpoint_report["method"] == "x"
