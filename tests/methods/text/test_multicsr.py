"""MultiCSR: the stage-3 loss against the authors' computation written out, stages 1-2's rules on
hand-made rows, the prompts, batched greedy generation against one-at-a-time generation, and a
tiny end-to-end run through the registry (tiny generator, tiny encoder, tiny budgets)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cl_bench.data.text.fact_instructions import (
    generation_prompt,
    instruction_documents,
    parse_fact,
    parse_generation,
    parse_score,
    scoring_prompt,
    shared_slots,
)
from cl_bench.data.text.text_corpus import random_fact, render
from cl_bench.errors import ClBenchError
from cl_bench.methods.text.multicsr import multicsr_loss, pick_premises
from cl_bench.methods.text.multicsr_data import Generated, Triplet, curate, generate_greedy, stage1_rows, unrefined_rows
from tests.conftest import write_tree


# --- the loss, written out from simcse/models.py::cl_masked_forward --------------------------------
def _cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def _reference_loss(z1, z2, z3, m1, m2, m3, temp: float, phi: float) -> float:
    """The authors' steps, one entry at a time: cos_sim = [sim(z1,z2), sim(z1,z_neg)] / temp;
    weights = 0 where the mask model's cos/temp > phi*20 (temp 0.05), diagonal of the first block
    forced to 1; soft = softmax(cos_sim * weights); loss = -mean(y log soft + (1-y) log(1-soft))."""
    b = len(z1)
    total = 0.0
    for i in range(b):
        cands = list(z2) + list(z3)
        mcands = None if m1 is None else list(m2) + list(m3)
        logits = []
        for j, c in enumerate(cands):
            s = _cos(z1[i], c) / temp
            w = 1.0
            if m1 is not None and _cos(m1[i], mcands[j]) / temp > phi * 20:
                w = 0.0
            if j == i:
                w = 1.0
            logits.append(s * w)
        top = max(logits)
        exps = [math.exp(x - top) for x in logits]
        z = sum(exps)
        for j, e in enumerate(exps):
            p = e / z
            total += -math.log(p) if j == i else -math.log(max(1 - p, 1e-12))
    return total / (b * 2 * b)


@pytest.mark.parametrize("masked", [False, True])
def test_stage3_loss_equals_authors_computation(masked: bool) -> None:
    rng = np.random.default_rng(3)
    z = [rng.normal(size=(4, 5)) for _ in range(3)]
    m = [rng.normal(size=(4, 5)) for _ in range(3)]
    if masked:  # make two off-diagonal candidates near-duplicates of their premise for the mask model
        m[1][2] = m[0][0] + 1e-3
        m[2][3] = m[0][1] + 1e-3
    ms = m if masked else [None, None, None]
    got = multicsr_loss(*(torch.tensor(x) for x in z), *(None if x is None else torch.tensor(x) for x in ms), 0.05, 0.95)
    want = _reference_loss(*z, *ms, temp=0.05, phi=0.95)
    assert got.item() == pytest.approx(want, rel=1e-9)


def test_mask_zeroes_exactly_the_false_negatives() -> None:
    gen = torch.Generator().manual_seed(5)
    z = [torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(3)]
    m1 = torch.eye(3, dtype=torch.float64)
    m2 = m1.clone()
    m3 = m1[[1, 2, 0]].clone()  # negative j of row i is premise i's duplicate when j = i-1 mod 3
    masked = multicsr_loss(*z, m1, m2, m3, 0.05, 0.95)
    # explicit: the own positive is never masked (its cosine is 1 > phi, but w_ii = 1)
    assert masked.item() == pytest.approx(_reference_loss(*(x.numpy() for x in z), m1.numpy(), m2.numpy(), m3.numpy(), 0.05, 0.95), rel=1e-9)
    assert masked.item() != pytest.approx(multicsr_loss(*z, None, None, None, 0.05, 0.95).item(), rel=1e-6)


def test_loss_has_gradient_and_prefers_the_positive() -> None:
    torch.manual_seed(0)
    z1 = torch.randn(4, 8, requires_grad=True)
    aligned = multicsr_loss(z1, z1.detach() + 0.01 * torch.randn(4, 8), torch.randn(4, 8), None, None, None, 0.05, 0.95)
    shuffled = multicsr_loss(z1, z1.detach()[[1, 2, 3, 0]], torch.randn(4, 8), None, None, None, 0.05, 0.95)
    assert aligned.item() < shuffled.item()
    aligned.backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()


# --- stages 1 and 2 ---------------------------------------------------------------------------------
def test_stage1_keeps_orders_and_drops_rows_as_the_authors_script() -> None:
    rows = [
        Generated("p0", "e0", "c0", 4.5, 1.0),   # kept as is
        Generated("p1", "e1", "c1", 2.0, 3.0),   # c <= 4 but e < c; e <= 4 and e <= c: swapped
        Generated("p2", "e2", "c2", 5.0, 4.5),   # c > 4 and e > 4: dropped
        Generated("p3", "e3", "c3", None, 1.0),  # unparseable score: dropped
        Generated("p4", "e4", "c4", 3.0, 3.0),   # c <= 4 and e >= c: kept (the tie goes to the first rule)
    ]
    got = stage1_rows(rows)
    assert got == [
        Triplet("p0", "e0", "c0", 4.5, 1.0),
        Triplet("p1", "c1", "e1", 3.0, 2.0),
        Triplet("p4", "e4", "c4", 3.0, 3.0),
    ]


def test_curation_filter_15() -> None:
    rows = [
        Triplet("a", "b", "c", 4.0, 1.0),  # kept
        Triplet("a", "b", "c", 3.0, 3.0),  # equal scores: dropped by the gap rule
        Triplet("a", "b", "c", 2.5, 1.0),  # positive below the line
        Triplet("a", "b", "c", 5.0, 3.5),  # negative above the line
        Triplet("a", "b", "c", 3.0, 3.0),
    ]
    assert curate(rows) == [rows[0]]
    assert curate(rows, similarity_gap=False) == [rows[0], rows[1], rows[4]]


def test_unrefined_rows_take_generations_as_they_come() -> None:
    rows = [Generated("p", "e", "c", None, None), Generated("q", "", "c", 5.0, 0.0)]
    assert unrefined_rows(rows) == [Triplet("p", "e", "c")]


def test_score_and_generation_parsing_follow_the_authors_rule() -> None:
    assert parse_score(" 3.5") == 3.5 and parse_score("4") == 4.0 and parse_score("0.0") == 0.0
    for bad in ("6", "3.55", "three", "", "-1", "5.0.0", "3."):
        assert parse_score(bad) is None
    assert parse_generation("'The baker sold a blue box.'\n\nWrite a") == "The baker sold a blue box."
    assert parse_generation("  'unterminated") == "unterminated"


def test_prompts_use_the_authors_wording() -> None:
    e = generation_prompt("entailment", "A tourist found a red ball.")
    assert e.startswith("Help me write a sentence that is entailment with a given sentence. Here are some examples:\n\n")
    assert e.count("Write a sentence that is entailment with '") == 3
    assert e.endswith("Write a sentence that is entailment with 'A tourist found a red ball.': ")
    assert "negative with" in generation_prompt("negative", "x")
    assert scoring_prompt("a", "b") == "Scoring the semantic similarity of the following sentences between 0.0 and 5.0: (a) a (b) b"
    with pytest.raises(ValueError):
        generation_prompt("neutral", "x")


def test_fact_parser_reads_every_rendering_back() -> None:
    rng = random.Random(1)
    for _ in range(300):
        fact = random_fact(rng)
        for t in range(4):
            for s in range(2):
                assert parse_fact(render(fact, t, s)) == fact
    assert parse_fact("Something else entirely.") is None


def test_instruction_corpus_answers_are_correct() -> None:
    docs = instruction_documents(30, seed=4)
    assert len(docs) == 30
    for i, doc in enumerate(docs):
        if i % 3 == 2:
            body, score = doc.rsplit(" ", 1)
            a, b = body.split(" (a) ")[1].split(" (b) ")
            assert float(score) == shared_slots(parse_fact(a), parse_fact(b))
        else:
            query = doc.rsplit("\n\n", 1)[1]
            premise = query.split("with '", 1)[1].split("': '", 1)[0]
            answer = query.split("': '", 1)[1].rstrip("'")
            same = parse_fact(answer) == parse_fact(premise)
            assert same if i % 3 == 0 else not same
            assert 3 <= shared_slots(parse_fact(answer), parse_fact(premise)) <= (5 if same else 4)


def test_premises_are_distinct_and_fixed_by_their_seed() -> None:
    texts = [f"s{i % 50}" for i in range(200)]
    a, b = pick_premises(texts, 20, 0), pick_premises(texts, 20, 0)
    assert a == b and len(set(a)) == 20 and pick_premises(texts, 20, 1) != a
    with pytest.raises(ClBenchError, match="fewer than n_premises"):
        pick_premises(texts, 51, 0)


# --- generation -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lm():
    from cl_bench.models.lm.tiny_lm import build_tiny_gpt2

    torch.manual_seed(0)
    lm = build_tiny_gpt2({"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 256,
                          "tokenizer": {"vocab_size": 300, "corpus": {"sources": ["qa"], "n_qa": 50}}})
    return lm.eval()


def test_batched_greedy_generation_equals_one_at_a_time(tiny_lm) -> None:
    prompts = ["Q: What is the capital of France?\nA:", "Write a sentence", "x", "Scoring the semantic similarity of"]
    batched = generate_greedy(tiny_lm, prompts, max_new_tokens=6, batch_size=3)
    single = tiny_lm.generate_until(prompts, until=("\u0000",), max_new_tokens=6)
    assert batched == single


def test_generation_refuses_a_prompt_longer_than_the_context(tiny_lm) -> None:
    with pytest.raises(ClBenchError, match="leaves no room for an answer"):
        generate_greedy(tiny_lm, ["word " * 300], max_new_tokens=8)


def test_too_long_prompts_get_no_answer_and_too_long_premises_are_not_picked(tiny_lm) -> None:
    from cl_bench.methods.text.multicsr_data import premise_fits

    prompts = ["Write a sentence", "word " * 300, "x"]
    answers = generate_greedy(tiny_lm, prompts, max_new_tokens=6, too_long="empty")
    assert answers[1] == ""
    assert [answers[0], answers[2]] == generate_greedy(tiny_lm, [prompts[0], prompts[2]], max_new_tokens=6)


def test_a_premise_is_picked_only_when_both_generation_prompts_fit() -> None:
    from types import SimpleNamespace

    from cl_bench.data.text.fact_instructions import generation_prompt
    from cl_bench.methods.text.multicsr_data import premise_fits

    tokenizer = lambda texts: {"input_ids": [t.split() for t in texts]}  # noqa: E731 - one token per word
    short, longer = "the cat sat", "the cat sat on the mat"
    n = max(len(generation_prompt(k, short).split()) for k in ("entailment", "negative"))
    lm = SimpleNamespace(hf=object(), tokenizer=tokenizer, max_length=n + 4)
    # room for an answer as long as the premise + 1 (4 tokens here), or max_new_tokens if fewer
    assert premise_fits(lm, [short, longer], max_new_tokens=48) == [True, False]
    assert premise_fits(lm, [short], max_new_tokens=2) == [True]
    lm.max_length = n + 3
    assert premise_fits(lm, [short], max_new_tokens=48) == [False]
    assert premise_fits(lm, [short], max_new_tokens=3) == [True]


# --- end to end through the registry ---------------------------------------------------------------
TREE = {
    "baselines/t-lm.yaml": """
        id: t-lm
        description: tiny generator (test fixture)
        provides: [causal_lm]
        arch: {name: tiny-gpt2, params: {n_layer: 1, n_embd: 32, n_head: 2, n_positions: 640,
               tokenizer: {vocab_size: 300, corpus: {sources: [qa], n_qa: 50}}}}
        train:
          objective: lm-pretrain
          params: {block_size: 128, max_steps: 2}
          data: {name: fact-instructions, params: {n: 30}}
          epochs: 1
          batch_size: 4
          lr: 0.001
    """,
    "baselines/t-mlm.yaml": """
        id: t-mlm
        description: tiny MLM encoder (test fixture)
        provides: [text_encoder]
        arch: {name: tiny-bert, params: {n_layer: 1, hidden: 16, n_head: 2, intermediate: 32, tokenizer: {corpus_docs: 50}}}
        train:
          objective: mlm
          params: {max_steps: 2, max_length: 16}
          epochs: 1
          batch_size: 8
          lr: 0.001
          data: {name: text-corpus, params: {n_docs: 20}}
    """,
    "baselines/t-multicsr.yaml": """
        id: t-multicsr
        description: tiny multicsr (test fixture)
        provides: [text_encoder]
        arch: {name: tiny-bert, params: {n_layer: 1, hidden: 16, n_head: 2, intermediate: 32, tokenizer: {corpus_docs: 50},
               init: {method: t-mlm}}}
        train:
          objective: multicsr
          params: {max_steps: 2, max_length: 16, generator: {method: t-lm}, n_premises: 24, refine: false,
                   max_new_tokens: 8}
          epochs: 5
          batch_size: 4
          lr: 0.001
          data: {name: text-corpus, params: {n_docs: 20}}
    """,
    "tasks/t-sts.yaml": """
        id: t-sts
        version: 1
        description: tiny sts (test fixture)
        dataset: {name: sts-synthetic, params: {n: 40}}
        protocol: {name: sts}
        primary_metric: cosine_spearman
    """,
}


@pytest.mark.slow
def test_multicsr_runs_end_to_end_from_an_mlm_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cl_bench import engine
    from cl_bench.registry import Registry

    write_tree(tmp_path, TREE)
    monkeypatch.setenv("CLBENCH_REGISTRY_PATH", str(tmp_path))
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "cache"))
    reg = Registry()
    opts = engine.RunOptions(results_dir=tmp_path / "r", cache_dir=tmp_path / "cache", device="cpu")
    out = engine.run(reg.task("t-sts"), reg.method("t-multicsr"), opts)
    assert out.record.model_source == "trained" and math.isfinite(out.record.metrics["cosine_spearman"])
    stages = out.model.card["multicsr"]
    assert stages["premises"] == 24 and stages["generator"]["method"] == "t-lm"
    assert stages["unrefined"]["rows"] >= 4 and len(stages["training_triplets_sha256"]) == 64
    # the encoder started from t-mlm's trained weights, and the cache key names them
    again = engine.run(reg.task("t-sts"), reg.method("t-multicsr"), opts)
    assert again.model.reused and again.record.model_fingerprint == out.record.model_fingerprint


def test_generation_stops_where_the_context_ends(tiny_lm) -> None:
    limit, tok = tiny_lm.max_length, tiny_lm.tokenizer
    words = 1
    while len(tok("word " * (words + 1))["input_ids"]) <= limit - 3:
        words += 1
    prompt = "word " * words
    room = limit - len(tok(prompt)["input_ids"])
    assert 3 <= room < 48  # the cap binds: 48 new tokens would run past the context
    out = generate_greedy(tiny_lm, [prompt], max_new_tokens=48)[0]
    assert len(tok(out, add_special_tokens=False)["input_ids"]) <= room


# --- the generator's prompts as a causal LM reads them ----------------------------------------------
@pytest.fixture(scope="module")
def facts_tokenizer():
    """The tokenizer tiny-lm-facts is built with (its YAML's arch params)."""
    from cl_bench.models.lm.tiny_lm import TokenizerParams, build_tokenizer
    from cl_bench.registry import Registry

    return build_tokenizer(TokenizerParams.model_validate(Registry().method("tiny-lm-facts").arch.params["tokenizer"]))


def test_the_causal_prompt_is_a_token_prefix_of_a_written_out_answer(facts_tokenizer) -> None:
    from cl_bench.methods.text.multicsr_data import causal_prompt

    premise, answer = "The baker hid a small dog in the library in winter.", "'In the library, the baker hid a small dog in winter.'"
    for kind in ("entailment", "negative"):
        prompt = generation_prompt(kind, premise)
        assert prompt.endswith("': ")  # the authors' text, kept
        trained = facts_tokenizer(prompt + answer)["input_ids"]  # how the LM saw prompt + answer in training
        fed = facts_tokenizer(causal_prompt(prompt))["input_ids"]
        assert trained[: len(fed)] == fed and facts_tokenizer.decode(trained[len(fed):]).startswith(" '")
        # the prompt as the authors wrote it ends in a lone space token the LM never saw before an answer
        verbatim = facts_tokenizer(prompt)["input_ids"]
        assert trained[: len(verbatim)] != verbatim


def test_generation_feeds_the_lm_causal_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    from cl_bench.methods.text import multicsr_data

    seen: list[str] = []

    def fake(lm, prompts, max_new_tokens, batch_size=32, too_long="raise"):
        seen.extend(prompts)
        return [" 'A sailor found a red ball.'" if "Write" in p else " 4.0" for p in prompts]

    monkeypatch.setattr(multicsr_data, "generate_greedy", fake)
    out = multicsr_data.generate_and_score(None, ["The baker hid a small dog.", "A tourist found a red ball."])
    assert len(seen) == 8 and not any(p != p.rstrip() for p in seen)
    assert out[0].entailment == "A sailor found a red ball." and out[0].entailment_score == 4.0


def test_every_corpus_sentence_fits_the_generator_with_room_for_an_answer(facts_tokenizer) -> None:
    """With the fact-world tokenizer the paper's prompts leave room for 48 new tokens in tiny-lm-facts'
    256 positions for every text-corpus sentence (with tiny-lm's pydoc/qa tokenizer only 402 of 11,811 fit)."""
    from types import SimpleNamespace

    from cl_bench.data.text.text_corpus import CorpusParams, load_text_corpus
    from cl_bench.methods.text.multicsr_data import premise_fits
    from cl_bench.registry import Registry

    positions = Registry().method("tiny-lm-facts").arch.params["n_positions"]
    texts = sorted(set(load_text_corpus(CorpusParams(n_docs=300, seed=0)).train.texts))
    lm = SimpleNamespace(hf=object(), tokenizer=facts_tokenizer, max_length=positions)
    assert all(premise_fits(lm, texts, max_new_tokens=48))
    longest = max(len(facts_tokenizer(generation_prompt(k, t))["input_ids"]) for t in texts for k in ("entailment", "negative"))
    assert longest + 48 <= positions


def test_the_lm_corpus_can_hold_the_fact_instructions() -> None:
    from cl_bench.data.text.lm_corpus import LMCorpusParams, build_corpus

    docs = build_corpus(LMCorpusParams(sources=["facts"], n_facts=12, seed=3)).train.documents
    assert sorted(docs) == sorted(instruction_documents(12, seed=3))


def test_generation_runs_once_per_generator_weights_not_per_generator_object(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run obtains its own generator object; runs of the same weights and premises share one generation."""
    from cl_bench.methods.text import multicsr

    calls: list[object] = []

    def fake(lm, premises, max_new_tokens, batch):
        calls.append(lm)
        return [Generated(p, "e", "c", 4.0, 1.0) for p in premises]

    monkeypatch.setattr(multicsr.stages, "generate_and_score", fake)
    monkeypatch.setattr(multicsr, "_GENERATED", {})
    first = multicsr._generated("weights-a", ("p", "q"), 48, 32, object())
    again = multicsr._generated("weights-a", ("p", "q"), 48, 32, object())
    other = multicsr._generated("weights-b", ("p", "q"), 48, 32, object())
    assert first == again and len(calls) == 2 and other == first
    for i in range(5):  # bounded: the oldest entries go
        multicsr._generated(f"w{i}", ("p",), 48, 32, object())
    assert len(multicsr._GENERATED) == 4
