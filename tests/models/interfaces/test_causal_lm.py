"""CausalLM adapter: batched, prefix-sharing log-likelihood against explicit per-request forward
passes; lm-eval's context/continuation split; truncation; greedy flags; generation; HF directory
round trip; tokenizer determinism; lm-pretrain training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.causal_lm import common_prefix
from cl_bench.models.lm.hf_causal_lm import build_hf_causal_lm
from cl_bench.models.lm.tiny_lm import build_tiny_gpt2

TOKENIZER = {"vocab_size": 300, "corpus": {"sources": ["qa"], "n_qa": 300}}


def tiny_model(seed: int = 0, **over: Any) -> Any:
    torch.manual_seed(seed)
    params = {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 128, "tokenizer": TOKENIZER, **over}
    return build_tiny_gpt2(params).eval()


def explicit_logprobs(model: Any, ctx: list[int], cont: list[int]) -> torch.Tensor:
    """Log-probs [len(cont), V] from one unbatched, uncached forward pass over (ctx + cont)[:-1]."""
    ids = torch.tensor([(ctx + cont)[:-1]])
    with torch.no_grad():
        logits = model.hf(input_ids=ids).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)
    return lp[len(ctx) - 1 : len(ctx) - 1 + len(cont)]


def explicit_loglik(model: Any, context: str, continuation: str) -> tuple[float, bool]:
    whole = model.tok_encode(context + continuation)
    ctx = model.tok_encode(context)
    cont = whole[len(ctx) :]
    lp = explicit_logprobs(model, ctx, cont)
    total = sum(float(lp[i, t]) for i, t in enumerate(cont))
    greedy = all(int(lp[i].argmax()) == t for i, t in enumerate(cont))
    return total, greedy


REQUESTS = [
    ("Q: What is the capital of France?\nA:", " The capital of France is Paris."),
    ("Q: What is the capital of France?\nA:", " Rome"),
    ("Q: What is the capital of France?\nA:", " I have no comment."),
    ("Q: How many legs does a spider have?\nA:", " Eight."),
    ("Q: How many legs does a spider have?\nA:", " A spider has eight legs, like all arachnids do."),
    ("Q: Why?\nA:", " No."),
]


@pytest.mark.parametrize("batch_size,chunk_size", [(32, 512), (2, 3), (1, 1)])
def test_loglikelihood_matches_explicit_forward_passes(batch_size: int, chunk_size: int) -> None:
    model = tiny_model()
    model.batch_size, model.chunk_size = batch_size, chunk_size
    got = model.loglikelihood(REQUESTS)
    for (c, x), (ll, greedy) in zip(REQUESTS, got):
        ref, ref_greedy = explicit_loglik(model, c, x)
        assert ll == pytest.approx(ref, abs=1e-4)
        assert greedy == ref_greedy


def test_shared_prefix_is_found_and_kept_short_of_every_context() -> None:
    assert common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == [1, 2]
    assert common_prefix([[5], [6]]) == []
    model = tiny_model()
    same = [("Q: a\nA:", " b"), ("Q: a\nA:", " c")]  # one context: the prefix stops a token short of it
    for (c, x), (ll, _) in zip(same, model.loglikelihood(same)):
        assert ll == pytest.approx(explicit_loglik(model, c, x)[0], abs=1e-4)


def test_encode_pair_moves_trailing_spaces_like_lm_eval() -> None:
    model = tiny_model()
    ctx, cont = model.encode_pair("Q: hi\nA: ", "yes")
    assert model.tok_decode(ctx) == "Q: hi\nA:" and model.tok_decode(cont) == " yes"
    ctx, cont = model.encode_pair("", "yes")
    assert ctx == [model.eot_token_id]
    with pytest.raises(ClBenchError, match="empty continuation"):
        model.encode_pair("Q:", "")


def test_long_requests_are_left_truncated_as_lm_eval_does() -> None:
    model = tiny_model(n_positions=24)
    context = "Q: " + "what is the capital of France and Spain and Italy? " * 4 + "\nA:"
    (ll, _), = model.loglikelihood([(context, " Paris.")])
    ctx, cont = model.encode_pair(context, " Paris.")
    whole = (ctx + cont)[-(24 + 1) :]
    ref = explicit_logprobs(model, whole[: len(whole) - len(cont)], cont)
    assert ll == pytest.approx(sum(float(ref[i, t]) for i, t in enumerate(cont)), abs=1e-4)
    with pytest.raises(ClBenchError, match="does not fit"):
        model.loglikelihood([("Q:", " word" * 40)])


def test_greedy_generation_is_the_greedy_continuation() -> None:
    model = tiny_model(seed=3)
    context = "Q: What is 2 plus 2?\nA:"
    text, = model.generate_until([context], until=["\n\n"], max_new_tokens=5)
    ids = model.tok_encode(context)
    expected: list[int] = []
    for _ in range(5):  # explicit greedy loop
        with torch.no_grad():
            nxt = int(model.hf(input_ids=torch.tensor([ids + expected])).logits[0, -1].argmax())
        if nxt == model.eot_token_id:
            break
        expected.append(nxt)
    assert text == model.tok_decode(expected).split("\n\n")[0]
    if text:
        ctx, cont = model.encode_pair(context, text)
        if model.tok_decode(ctx + cont) == context + text and cont == expected[: len(cont)]:
            assert model.loglikelihood([(context, text)])[0][1] is True


def test_hf_directory_round_trip(tmp_path: Path) -> None:
    model = tiny_model(seed=1)
    model.save_pretrained(tmp_path / "lm")
    loaded = build_hf_causal_lm({"path": str(tmp_path / "lm"), "batch_size": 4})
    a = [ll for ll, _ in model.loglikelihood(REQUESTS)]
    b = [ll for ll, _ in loaded.loglikelihood(REQUESTS)]
    assert b == pytest.approx(a, abs=1e-5)
    other = tiny_model(seed=2)
    report = other.load_checkpoint(tmp_path / "lm" / "config.json")  # a file inside the folder works too
    assert report["format"] == "huggingface"
    assert [ll for ll, _ in other.loglikelihood(REQUESTS)] == pytest.approx(a, abs=1e-5)
    with pytest.raises(ClBenchError, match="not a directory"):
        build_hf_causal_lm({"path": str(tmp_path / "missing")})
    with pytest.raises(ClBenchError, match="no config.json"):
        build_hf_causal_lm({"path": str(tmp_path)})


def test_tokenizer_is_deterministic_and_guards_cached_weights() -> None:
    from cl_bench.models.lm import tiny_lm

    a = tiny_model()
    tiny_lm._tokenizer_json.cache_clear()
    b = tiny_model()
    assert a.tokenizer.backend_tokenizer.to_str() == b.tokenizer.backend_tokenizer.to_str()
    assert torch.equal(a.tokenizer_sha256, b.tokenizer_sha256)
    state = dict(a.state_dict())
    state["tokenizer_sha256"] = torch.zeros(32, dtype=torch.uint8)
    with pytest.raises(ClBenchError, match="different tokenizer"):
        b.load_state_dict(state)
    with pytest.raises(ClBenchError, match="divisible"):
        tiny_model(n_embd=30, n_head=4)


def test_lm_pretrain_lowers_the_loss() -> None:
    from cl_bench.data.text.lm_corpus import load_lm_corpus
    from cl_bench.methods.lm.lm_pretrain import LMPretrain
    from cl_bench.specs import TrainRecipe

    corpus = load_lm_corpus({"sources": ["qa"], "n_qa": 300, "seed": 1}, None)
    model = tiny_model()
    recipe = TrainRecipe(objective="lm-pretrain", params={"block_size": 32, "max_steps": 30},
                         epochs=5, batch_size=8, optimizer="adamw", lr=3e-3)
    card = LMPretrain.train_model(model, recipe, corpus.train, 0, 0, torch.device("cpu"), False)
    assert card.steps == 30 and card.final_loss < card.first_loss - 0.5
    with pytest.raises(ClBenchError, match="exceeds the model's context"):
        bad = recipe.model_copy(update={"params": {"block_size": 512}})
        LMPretrain.train_model(model, bad, corpus.train, 0, 0, torch.device("cpu"), False)


def test_cut_blocks_hand_worked() -> None:
    from cl_bench.methods.lm.lm_pretrain import cut_blocks

    blocks = cut_blocks([[1, 2, 0], [3, 0], [4, 5, 6, 0]], block_size=2)  # stream 1 2 0 3 0 4 5 6 0
    assert blocks.tolist() == [[1, 2, 0], [3, 0, 4], [5, 6, 0]]
    with pytest.raises(ClBenchError, match="fewer than one block"):
        cut_blocks([[1, 0]], block_size=8)


def test_lm_pretrain_reshuffles_documents_every_epoch_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """reshuffle_documents: each epoch after the first cuts a new seeded order of the documents
    (so a small corpus is not learned as one fixed stream); off (the default) the stream is cut once."""
    from cl_bench.data.text.lm_corpus import load_lm_corpus
    from cl_bench.methods.lm import lm_pretrain
    from cl_bench.specs import TrainRecipe

    corpus = load_lm_corpus({"sources": ["qa"], "n_qa": 60, "seed": 1}, None)
    model = tiny_model()
    encoded = [model.tok_encode(d) + [model.eot_token_id] for d in corpus.train.documents]
    seen: list[list[list[int]]] = []
    real = lm_pretrain.cut_blocks
    monkeypatch.setattr(lm_pretrain, "cut_blocks", lambda docs, bs: seen.append(list(docs)) or real(docs, bs))
    for reshuffle, calls in ((False, 1), (True, 3)):
        seen.clear()
        recipe = TrainRecipe(objective="lm-pretrain", params={"block_size": 32, "reshuffle_documents": reshuffle},
                             epochs=3, batch_size=64, optimizer="adamw", lr=1e-3)
        lm_pretrain.LMPretrain.train_model(model, recipe, corpus.train, 0, 0, torch.device("cpu"), False)
        assert len(seen) == calls and seen[0] == encoded
        for later in seen[1:]:  # the same documents, in another order
            assert later != encoded and sorted(later) == sorted(encoded)
