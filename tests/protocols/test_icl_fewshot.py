"""icl_fewshot: demonstration sampler (no overlap, deterministic), label-word scoring against
explicit forward passes on hand-built prompts, contextual calibration on a hand-worked example,
the k-shot curve's summaries, and one-line errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from cl_bench.data.icl.fewshot_synthetic import (
    FewShotCorpusParams,
    episode_documents,
    generate_records,
    load_fewshot_corpus,
    load_fewshot_synthetic,
)
from cl_bench.data.icl.fewshot_text import FewShotExample, FewShotSplit, FewShotTextData, PromptFormat
from cl_bench.errors import ClBenchError
from cl_bench.models.lm.tiny_lm import build_tiny_gpt2
from cl_bench.protocols import fewshot_prompts as fp
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.icl_fewshot import (
    ICLFewShotParams,
    fixed_subsample_indices,
    orderings,
    pairs_for,
    run_icl_fewshot,
    score_matrix,
)

TOKENIZER = {"vocab_size": 300, "corpus": {"sources": ["qa"], "n_qa": 300}}


def tiny_model(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return build_tiny_gpt2({"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 256, "tokenizer": TOKENIZER}).eval()


def ctx(seed: int = 0) -> RunContext:
    return RunContext(device=torch.device("cpu"), seed=seed, extract=lambda *a: None)


def small_data(n_train: int = 40, n_test: int = 12) -> FewShotTextData:
    return load_fewshot_synthetic({"rule": "sentiment-keywords", "n_train": n_train, "n_test": n_test})


def explicit_ll(model: Any, context: str, continuation: str) -> float:
    """Summed log-prob of the continuation from one uncached forward pass (lm-eval's token split)."""
    whole, ctx_ids = model.tok_encode(context + continuation), model.tok_encode(context)
    cont = whole[len(ctx_ids):]
    with torch.no_grad():
        lp = torch.log_softmax(model.hf(input_ids=torch.tensor([(ctx_ids + cont)[:-1]])).logits[0].double(), -1)
    return sum(float(lp[len(ctx_ids) - 1 + i, t]) for i, t in enumerate(cont))


# --- sampler ---------------------------------------------------------------------------------------

def test_pool_excludes_every_evaluated_example_even_duplicated_across_splits() -> None:
    data = small_data()
    dup = data.test.examples[3]
    data.train = FewShotSplit(data.train.examples + [FewShotExample(dup.text + "  ", dup.label)])
    pool = fp.demo_pool(data, data.test.examples)
    test_keys = {e.key() for e in data.test.examples}
    assert len(pool) == len(data.train) - 1
    for k in (1, 4, 16, 40):
        for d in range(5):
            demos = fp.draw_demos(pool, k, seed=3, draw=d)
            assert len(set(demos)) == k
            assert all(data.train.examples[i].key() not in test_keys for i in demos)


def test_sampler_is_deterministic_per_seed_and_varies_with_seed_and_draw() -> None:
    pool = list(range(100))
    assert fp.draw_demos(pool, 8, 0, 0) == fp.draw_demos(pool, 8, 0, 0)
    assert fp.draw_demos(pool, 8, 0, 0) != fp.draw_demos(pool, 8, 1, 0)
    assert fp.draw_demos(pool, 8, 0, 0) != fp.draw_demos(pool, 8, 0, 1)
    assert fp.draw_demos(pool, 0, 0, 0) == []


def test_orderings_are_distinct_permutations_of_the_drawn_set() -> None:
    demos = [5, 9, 2]
    orders = orderings(demos, seed=0, draw=0, n_orders=10)
    assert orders[0] == demos and len(orders) == 6  # 3! distinct orders, order 0 as drawn
    assert len({tuple(o) for o in orders}) == 6 and all(sorted(o) == sorted(demos) for o in orders)
    assert orderings([7], 0, 0, 4) == [[7]]


def test_k_larger_than_the_pool_is_a_one_line_error() -> None:
    with pytest.raises(ClBenchError) as e:
        fp.draw_demos(list(range(5)), 8, 0, 0)
    assert "8 demonstrations" in str(e.value) and "\n" not in str(e.value)


# --- prompts and scoring -----------------------------------------------------------------------------

def test_prompt_layout_is_the_documented_one() -> None:
    data = FewShotTextData(
        name="x", train=FewShotSplit([FewShotExample("good film", 1), FewShotExample("bad", 0)]),
        test=FewShotSplit([FewShotExample("ok", 1)]), label_words=["Negative", "Positive"],
        format=PromptFormat(instruction="Rate.\n\n", input_prefix="Review: ", output_prefix="\nSentiment:"),
    )
    got = fp.prompt(data, data.train.examples, data.test.examples[0])
    assert got == "Rate.\n\nReview: good film\nSentiment: Positive\n\nReview: bad\nSentiment: Negative\n\nReview: ok\nSentiment:"
    pair = FewShotTextData(name="y", train=data.train, test=FewShotSplit([FewShotExample("P", 0, "H")]),
                           label_words=["True", "False"],
                           format=PromptFormat(input_prefix="", pair_separator="\nquestion: ",
                                               pair_suffix=" True or False?", output_prefix="\nanswer:"))
    assert pair.query_text(pair.test.examples[0]) == "P\nquestion: H True or False?\nanswer:"


def test_label_word_scores_and_accuracy_match_explicit_forward_passes() -> None:
    model = tiny_model()
    data = small_data()
    params = ICLFewShotParams(ks=[0, 2], primary_k=2, draws=2, orders=1, n_test=None)
    res = run_icl_fewshot(model, data, params, ctx(seed=4))
    pool = fp.demo_pool(data, data.test.examples)
    y = np.array([e.label for e in data.test.examples])
    accs = []
    for d in range(2):
        demos = [data.train.examples[i] for i in fp.draw_demos(pool, 2, 4, d)]
        head = "".join(f"Review: {e.text}\nSentiment: {['Negative', 'Positive'][e.label]}\n\n" for e in demos)
        ll = np.array([[explicit_ll(model, head + f"Review: {q.text}\nSentiment:", f" {w}")
                        for w in ("Negative", "Positive")] for q in data.test.examples])
        batched = score_matrix(model, pairs_for(model, data, fp.demo_block(data, demos), data.test.examples), 2)
        np.testing.assert_allclose(batched, ll, atol=2e-4)
        accs.append(100.0 * np.mean(ll.argmax(1) == y))
    assert res.metrics["acc_k2"] == pytest.approx(np.mean(accs), abs=1e-9)
    assert res.metrics["std_k2"] == pytest.approx(np.std(accs), abs=1e-9)
    assert res.metrics["accuracy"] == res.metrics["acc_k2"]
    ll0 = np.array([[explicit_ll(model, f"Review: {q.text}\nSentiment:", f" {w}") for w in ("Negative", "Positive")]
                    for q in data.test.examples])
    assert res.metrics["acc_k0"] == pytest.approx(100.0 * np.mean(ll0.argmax(1) == y))
    assert [p["k"] for p in res.extras["curve"]] == [0, 2]


def test_order_spread_is_mean_over_draws_of_max_minus_min() -> None:
    res = run_icl_fewshot(tiny_model(), small_data(), ICLFewShotParams(ks=[3], primary_k=3, draws=2, orders=3, n_test=None), ctx())
    runs = res.extras["curve"][0]["runs"]
    assert len(runs) == 2 and all(len(r) == 3 for r in runs)
    assert res.metrics["spread_k3"] == pytest.approx(np.mean([max(r) - min(r) for r in runs]))
    assert res.metrics["acc_k3"] == pytest.approx(np.mean(runs))


def test_predictions_are_the_primary_k_queries_of_every_draw_and_order() -> None:
    data = small_data(n_test=12)
    params = ICLFewShotParams(ks=[0, 2], primary_k=2, draws=2, orders=2, n_test=8)
    res = run_icl_fewshot(tiny_model(), data, params, ctx(seed=3))
    p = res.predictions
    kept = fixed_subsample_indices(12, 8)
    assert len(kept) == 8 and kept[-1] < 12 and len(p.item) == 2 * 2 * 8 and len(set(p.item.tolist())) == 32
    assert p.item[8 + 1] == f"seed3/k2/d0/o1/q{kept[1]}"  # only primary_k = 2; k = 0 is not stored
    np.testing.assert_array_equal(p.target, np.tile([data.test.examples[i].label for i in kept], 4))
    np.testing.assert_array_equal(p.correct, p.pred == p.target)
    assert res.metrics["accuracy"] == pytest.approx(100 * np.mean(p.pred == p.target), abs=1e-9)
    runs = res.extras["curve"][1]["runs"]  # [draw][order] accuracy
    for d in range(2):
        for o in range(2):
            rows = np.char.startswith(p.item.astype(str), f"seed3/k2/d{d}/o{o}/")
            assert runs[d][o] == pytest.approx(100 * np.mean(p.correct[rows]), abs=1e-9)


def test_a_k_that_does_not_fit_the_context_is_dropped_and_recorded() -> None:
    model = tiny_model()
    res = run_icl_fewshot(model, small_data(), ICLFewShotParams(ks=[1, 30], primary_k=1, draws=1, orders=1, n_test=4), ctx())
    assert "acc_k30" not in res.metrics and "30" in res.extras["dropped_ks"]
    assert "256" in res.extras["dropped_ks"]["30"]
    with pytest.raises(ClBenchError):
        run_icl_fewshot(model, small_data(), ICLFewShotParams(ks=[30], primary_k=30, draws=1, orders=1, n_test=4), ctx())


# --- calibration -------------------------------------------------------------------------------------

def test_contextual_calibration_on_a_hand_worked_example() -> None:
    # content-free inputs give label probabilities (0.8, 0.2) and (0.6, 0.4): p_cf = (0.7, 0.3)
    cf = np.log(np.array([[0.8, 0.2], [0.6, 0.4]])) + np.array([[-3.0], [-7.0]])  # unnormalised is fine
    p_cf = fp.calibration_prior(cf)
    np.testing.assert_allclose(p_cf, [0.7, 0.3])
    # x1: p = (0.6, 0.4) -> raw 0; calibrated 0.6/0.7 = 0.857 < 0.4/0.3 = 1.333 -> 1
    # x2: p = (0.9, 0.1) -> 0.9/0.7 = 1.286 > 0.1/0.3 = 0.333 -> 0
    ll = np.log(np.array([[0.6, 0.4], [0.9, 0.1]]))
    assert list(ll.argmax(1)) == [0, 0]
    assert list(fp.calibrated_predictions(ll, p_cf)) == [1, 0]


def test_calibrated_accuracy_uses_the_same_context_with_content_free_inputs() -> None:
    model = tiny_model()
    data = small_data()
    params = ICLFewShotParams(ks=[2], primary_k=2, draws=1, orders=1, n_test=None, calibrate=True, content_free=["N/A"])
    res = run_icl_fewshot(model, data, params, ctx())
    pool = fp.demo_pool(data, data.test.examples)
    demos = [data.train.examples[i] for i in fp.draw_demos(pool, 2, 0, 0)]
    head = "".join(f"Review: {e.text}\nSentiment: {['Negative', 'Positive'][e.label]}\n\n" for e in demos)
    words = (" Negative", " Positive")
    cf = np.array([[explicit_ll(model, head + "Review: N/A\nSentiment:", w) for w in words]])
    p_cf = np.exp(cf[0] - cf[0].max()) / np.exp(cf[0] - cf[0].max()).sum()
    ll = np.array([[explicit_ll(model, head + f"Review: {q.text}\nSentiment:", w) for w in words] for q in data.test.examples])
    y = np.array([e.label for e in data.test.examples])
    expected = 100.0 * np.mean(np.argmax(ll - np.log(p_cf), axis=1) == y)
    assert res.metrics["acc_cal_k2"] == pytest.approx(expected)


# --- generated data and errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["sentiment-keywords", "majority-ab", "first-last", "word-topic"])
def test_synthetic_rules_label_by_their_rule_and_test_never_in_train(rule: str) -> None:
    data = load_fewshot_synthetic({"rule": rule, "n_train": 60, "n_test": 40, "seed": 2})
    assert {e.text for e in data.train.examples}.isdisjoint({e.text for e in data.test.examples})
    for e in data.train.examples + data.test.examples:
        w = e.text.split()
        if rule == "majority-ab":
            assert e.label == int(w.count("b") > w.count("a")) and len(w) % 2 == 1
        elif rule == "first-last":
            assert e.label == int(w[0] != w[-1])
        elif rule == "sentiment-keywords":
            assert e.label == int(any(x in {"good", "great", "nice", "happy", "best", "love", "fine"} for x in w))
        else:
            topics = {"dog": 0, "cat": 0, "horse": 0, "bird": 0, "fish": 0, "cow": 0, "lion": 0,
                      "bread": 1, "apple": 1, "rice": 1, "cheese": 1, "soup": 1, "cake": 1, "egg": 1}
            assert e.label == next((topics[x] for x in w if x in topics), 2)
    again = load_fewshot_synthetic({"rule": rule, "n_train": 60, "n_test": 40, "seed": 2})
    assert again.fingerprint == data.fingerprint


def test_episode_corpus_reads_its_mapping_from_context() -> None:
    docs = episode_documents(FewShotCorpusParams(n_episodes=20, min_shots=2, max_shots=4))
    assert len(docs) == 20 and all(d.count("\n\n") >= 2 for d in docs)
    assert load_fewshot_corpus({"n_episodes": 5}).train.documents == episode_documents(FewShotCorpusParams(n_episodes=5))
    with pytest.raises(ClBenchError):
        load_fewshot_corpus({"min_shots": 5, "max_shots": 2})


def test_too_few_distinct_strings_is_an_error() -> None:
    with pytest.raises(ClBenchError):
        generate_records("majority-ab", 1000, 0)


def test_protocol_rejects_other_data_and_bad_params() -> None:
    with pytest.raises(ClBenchError):
        run_icl_fewshot(tiny_model(), object(), ICLFewShotParams(), ctx())
    with pytest.raises(ValueError):
        ICLFewShotParams(ks=[0, 1], primary_k=4)
    with pytest.raises(ValueError):
        ICLFewShotParams(adapt=["cpt"])
