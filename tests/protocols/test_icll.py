"""ICLL metric fidelity: the DFA accuracy and the n-gram baselines against independent computations."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from cl_bench.data.icl.dfa import DFA, PAD, SEP, VOCAB, ICLLParams, generate
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.icll import ICLLParams as ProtoParams
from cl_bench.protocols.icll import ngram_predictions, run_icll, score_positions


@pytest.fixture(scope="module")
def data():
    return generate(ICLLParams(n_train=5, n_test=12, max_length=9, seed=11))


def reference_accuracy(inputs: list[int], preds: list[int], dfa: DFA) -> tuple[float, float]:
    """The reference's string procedure: chars joined by spaces, split on " | ", DFA on the last word."""
    input_chars = [VOCAB[t] for t in inputs if VOCAB[t] != "."]
    pred_chars = [VOCAB[t] for t in preds]
    correct = total = 0.0
    for t in range(len(input_chars)):
        if len(input_chars) > t + 1 and input_chars[t + 1] == "|":
            continue
        current = " ".join(input_chars[: t + 1] + [pred_chars[t]]).split(" | ")[-1]
        symbols = current.split(" ")
        ok = all(len(c) == 1 and c in VOCAB[:18] for c in symbols) and dfa.accepts([VOCAB.index(c) for c in symbols])
        total += 1
        correct += ok
    return correct, total


def test_hand_worked_example():
    a, b, c = 0, 1, 2
    dfa = DFA([[(a, 1)], [(b, 0), (c, 0)]])  # (a(b|c))* prefixes
    inputs = [a, b, SEP, a, c, a]
    preds = [b, SEP, a, c, c, PAD]
    # t=0 "a"+b ok; t=1 skipped (next is |); t=2 "" + a ok; t=3 "a"+c ok; t=4 "ac"+c no; t=5 "aca"+pad no
    recs = score_positions(inputs, preds, dfa)
    assert [(t, k, ok) for t, k, ok in recs] == [(0, 0, True), (2, 1, True), (3, 1, True), (4, 1, False), (5, 1, False)]


def test_accuracy_matches_the_reference_string_procedure(data):
    rng = np.random.default_rng(0)
    for dfa, seq in zip(data.test.dfas, data.test.sequences):
        inputs = seq[:-1].astype(int).tolist()
        for preds in (rng.integers(0, 20, len(inputs)).tolist(), ngram_predictions(inputs, 2)):
            recs = score_positions(inputs, preds, dfa)
            correct, total = reference_accuracy(inputs, preds, dfa)
            assert len(recs) == total and sum(ok for *_, ok in recs) == correct
            # the string index = number of separators read so far
            for t, k, _ in recs:
                assert k == inputs[: t + 1].count(SEP)


def _ref_probs(counts: dict, vocab: list[str], prefix: str, chars: list[str], n: int) -> list[float]:
    res = []
    for ch in chars:
        if prefix + ch in counts[n]:
            if n == 1:
                res.append(counts[1][ch] / sum(counts[1].values()))
            else:
                res.append(counts[n][prefix + ch] / counts[n - 1][prefix])
            continue
        seen = [o for o in vocab if prefix + o in counts[n]]
        beta = 1.0 - sum(counts[n][prefix + o] / counts[n - 1][prefix] for o in seen)
        missing = [o for o in vocab if o not in seen]
        low = _ref_probs(counts, vocab, prefix[1:], missing, n - 1)
        res.append(beta / sum(low) * low[missing.index(ch)])
    return res



def reference_ngram(inputs: list[int], N: int) -> list[int]:
    """Independent re-derivation of the reference ngram.py: counts recomputed from scratch per step."""
    text = "".join(VOCAB[t] for t in inputs)
    out = []
    for t in range(1, len(text) + 1):
        texts = text[:t].split("|")
        counts = {n: Counter() for n in range(1, N + 1)}
        for s in texts:
            s = "_" * (N - 1) + s
            for n, counter in counts.items():
                for i in range(len(s) - n + 1):
                    counter[s[i : i + n]] += 1
        vocab = sorted(set("".join(texts)))

        prefix = texts[-1][-(N - 1):] if N > 1 else ""
        prefix = "_" * (N - 1 - len(prefix)) + prefix
        p = _ref_probs(counts, vocab, prefix, vocab, N)
        best = max(range(len(vocab)), key=lambda i: (round(p[i], 12), -VOCAB.index(vocab[i])))
        out.append(VOCAB.index(vocab[best]))
    return out


@pytest.mark.parametrize("order", [1, 2, 3])
def test_ngram_predictions_match_an_independent_implementation(data, order):
    for seq in data.test.sequences[:6]:
        inputs = seq[:-1].astype(int).tolist()
        assert ngram_predictions(inputs, order) == reference_ngram(inputs, order)


def test_bigram_hand_example():
    a, b, c = 0, 1, 2
    # "ab|ac|a": P(b) = P(c) = 1/3 (a occurs 3 times), the back-off mass 1/3 goes to the unseen a:
    # a three-way tie -> lowest id (a)
    assert ngram_predictions([a, b, SEP, a, c, SEP, a], 2)[-1] == a
    # "ab|ab|ac|a": b seen twice after a
    assert ngram_predictions([a, b, SEP, a, b, SEP, a, c, SEP, a], 2)[-1] == b
    # unigram: most frequent letter so far
    assert ngram_predictions([c, c, a, SEP, b], 1)[-1] == c


class Oracle(torch.nn.Module):
    """Predicts, at every position, a symbol the instance's DFA accepts (or a fixed token)."""

    input_kind = "tokens"

    def __init__(self, data, fixed: int | None = None) -> None:
        super().__init__()
        self.by_prefix = {tuple(s[:-1].astype(int).tolist()): d for s, d in zip(data.test.sequences, data.test.dfas)}
        self.fixed = fixed

    def token_logits(self, ids: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*ids.shape, 20)
        for row in range(ids.shape[0]):
            toks = [t for t in ids[row].tolist()]
            n = len(toks)
            while n and toks[n - 1] == PAD:
                n -= 1
            dfa = self.by_prefix[tuple(toks[:n])]
            state = 0
            for t in range(n):
                state = 0 if toks[t] == SEP else dfa.table[state][toks[t]]
                out[row, t, self.fixed if self.fixed is not None else min(dfa.table[state])] = 1.0
        return out


def test_protocol_scores_an_oracle_100_and_a_constant_by_hand(data):
    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: None)
    res = run_icll(Oracle(data), data, ProtoParams(batch_size=5), ctx)
    assert res.metrics["accuracy"] == 100.0
    assert set(res.extras["by_num_strings"]["model"]) == {100.0}
    res = run_icll(Oracle(data, fixed=0), data, ProtoParams(batch_size=5, ngram_orders=[2]), ctx)
    correct = total = 0
    for dfa, seq in zip(data.test.dfas, data.test.sequences):
        inputs = seq[:-1].astype(int).tolist()
        c, t = reference_accuracy(inputs, [0] * len(inputs), dfa)
        correct, total = correct + c, total + t
    assert res.metrics["accuracy"] == pytest.approx(100 * correct / total)
    assert sum(res.extras["by_num_strings"]["positions"]) == total == res.extras["n_positions"]
    assert "bigram_accuracy" in res.metrics and "unigram_accuracy" not in res.metrics


def test_protocol_refuses_other_models(data):
    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: None)
    with pytest.raises(ClBenchError, match="token_logits"):
        run_icll(torch.nn.Linear(2, 2), data, ProtoParams(), ctx)
