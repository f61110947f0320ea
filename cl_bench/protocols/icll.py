"""``icll``: in-context language learning accuracy on held-out random DFAs (PROTOCOLS.md §9a).

The metric is the reference's ``eval.py::_get_dfa_accuracy`` (berlino/seq_icl): at every input
position t of an instance (padding excluded) the model's greedy next token is appended to the
current string (the tokens after the last ``|`` up to t); the prediction is correct when the
instance's DFA accepts that string. Positions whose next input is ``|`` are skipped (ending a
string is always allowed), and a predicted ``|`` or pad is never accepted. Accuracy = correct /
counted positions over the whole test split, in percent.

Also reported: the same accuracy as a function of the number of complete strings before the
position (the in-context examples seen), and the accuracy of in-context n-gram predictors that
need no training (the paper's "n-gram heads" baselines; reference ``ngram.py``): counts of
n-grams over the strings seen so far, each string padded with n − 1 begin marks, the next token
predicted from the last n − 1 tokens of the current string with back-off to lower orders for
tokens never seen after that context (the reference's back-off weights, no smoothing); ties (to 12
decimals) go to the lowest token id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field

from cl_bench.budget import first_test
from cl_bench.components import register
from cl_bench.data.icl.dfa import DFA, PAD, SEP, DFAData
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext

BEGIN = -1  # the n-gram models' begin-of-string mark
ORDER_NAMES = {1: "unigram", 2: "bigram", 3: "trigram"}


class ICLLParams(ProtocolParams):
    batch_size: int = Field(default=32, ge=1)
    ngram_orders: list[int] = Field(default_factory=lambda: [1, 2, 3])


def score_positions(inputs: Sequence[int], preds: Sequence[int], dfa: DFA) -> list[tuple[int, int, bool]]:
    """(position t, #complete strings before t, correct) for every counted position."""
    out: list[tuple[int, int, bool]] = []
    state = 0
    strings = 0
    n = len(inputs)
    for t in range(n):
        tok = int(inputs[t])
        if tok == SEP:
            state, strings = 0, strings + 1
        else:
            state = dfa.table[state][tok]  # instances come from the DFA: the edge exists
        if t + 1 < n and int(inputs[t + 1]) == SEP:
            continue
        p = int(preds[t])
        out.append((t, strings, p != SEP and p != PAD and p in dfa.table[state]))
    return out


class InContextNGram:
    """Counts of 1..N-grams over the strings read so far (each padded with N − 1 BEGIN marks)."""

    def __init__(self, order: int) -> None:
        self.N = order
        self.counts: dict[int, Counter[tuple[int, ...]]] = {n: Counter() for n in range(1, order + 1)}
        self.vocab: set[int] = set()
        self.current: list[int] = []
        self._start_string()

    def _start_string(self) -> None:
        self.current = [BEGIN] * (self.N - 1)
        for n in range(1, self.N):
            self.counts[n][(BEGIN,) * n] += self.N - n

    def read(self, tok: int) -> None:
        if tok == SEP:
            self._start_string()
            return
        self.current.append(tok)
        self.vocab.add(tok)
        for n in range(1, self.N + 1):
            self.counts[n][tuple(self.current[-n:])] += 1

    def _probs(self, prefix: tuple[int, ...], cands: list[int], n: int) -> dict[int, float]:
        if n == 1:
            total = sum(self.counts[1].values())
            return {c: self.counts[1][(c,)] / total for c in cands}
        denom = self.counts[n - 1][prefix]
        seen = {c: self.counts[n][prefix + (c,)] / denom for c in self.vocab if self.counts[n][prefix + (c,)]}
        out = {c: seen[c] for c in cands if c in seen}
        unseen_cands = [c for c in cands if c not in seen]
        if unseen_cands:
            unseen_all = sorted(c for c in self.vocab if c not in seen)
            lower = self._probs(prefix[1:], unseen_all, n - 1)
            beta = 1.0 - sum(seen.values())
            norm = sum(lower.values())
            for c in unseen_cands:
                out[c] = beta * lower[c] / norm if norm > 0 else 0.0
        return out

    def predict(self) -> int:
        """Greedy next token given everything read so far."""
        cands = sorted(self.vocab)
        if not cands:
            return PAD
        prefix = tuple(self.current[len(self.current) - (self.N - 1):]) if self.N > 1 else ()
        probs = self._probs(prefix, cands, self.N)
        return max(cands, key=lambda c: (round(probs[c], 12), -c))  # float-noise ties -> lowest id


def ngram_predictions(inputs: Sequence[int], order: int) -> list[int]:
    """The in-context n-gram prediction after each input position."""
    model = InContextNGram(order)
    out = []
    for tok in inputs:
        model.read(int(tok))
        out.append(model.predict())
    return out


@torch.no_grad()
def model_predictions(model: Any, instances: list[np.ndarray], batch_size: int, device: torch.device) -> list[np.ndarray]:
    """Greedy next-token predictions at every input position (inputs = instance[:-1])."""
    preds: list[np.ndarray] = []
    for b in range(0, len(instances), batch_size):
        chunk = instances[b : b + batch_size]
        width = max(len(s) for s in chunk) - 1
        ids = torch.full((len(chunk), width), PAD, dtype=torch.long)
        for row, s in enumerate(chunk):
            ids[row, : len(s) - 1] = torch.as_tensor(np.asarray(s[:-1], dtype=np.int64))
        top = model.token_logits(ids.to(device)).argmax(dim=-1).cpu().numpy()
        preds += [top[row, : len(s) - 1] for row, s in enumerate(chunk)]
    return preds


def accuracy_table(records: list[list[tuple[int, int, bool]]]) -> tuple[float, dict[int, tuple[int, int]]]:
    """Overall accuracy (%) and {#strings before: (correct, total)}."""
    by: dict[int, list[int]] = {}
    correct = total = 0
    for rec in records:
        for _, k, ok in rec:
            cell = by.setdefault(k, [0, 0])
            cell[0] += ok
            cell[1] += 1
            correct += ok
            total += 1
    if total == 0:
        raise ClBenchError("icll: the test split has no scorable positions")
    return 100.0 * correct / total, {k: (c, t) for k, (c, t) in sorted(by.items())}


def run_icll(model: Any, data: Any, params: ICLLParams, ctx: RunContext) -> ProtocolResult:
    if not isinstance(data, DFAData):
        raise ClBenchError("protocol icll needs the icll-dfa dataset")
    if not hasattr(model, "token_logits") or getattr(model, "input_kind", "tokens") != "tokens":
        raise ClBenchError(
            "protocol icll needs a sequence model over the ICLL vocabulary (methods icl-transformer, icl-lstm, "
            "icl-linear-rnn); this method's model has no token_logits"
        )
    split = data.test
    inputs = [s[:-1] for s in split.sequences]
    preds = model_predictions(model, split.sequences, params.batch_size, ctx.device)
    acc, by = accuracy_table([score_positions(i, p, d) for i, p, d in zip(inputs, preds, split.dfas)])
    metrics = {"accuracy": acc}
    curve: dict[str, Any] = {"strings_before": list(by), "positions": [t for _, t in by.values()],
                             "model": [100.0 * c / t for c, t in by.values()]}
    for order in params.ngram_orders:
        name = ORDER_NAMES.get(order, f"{order}gram")
        recs = [score_positions(i, ngram_predictions(i, order), d) for i, d in zip(inputs, split.dfas)]
        n_acc, n_by = accuracy_table(recs)
        metrics[f"{name}_accuracy"] = n_acc
        curve[name] = [100.0 * n_by[k][0] / n_by[k][1] for k in by]
    extras = {"n_instances": len(split), "n_positions": sum(curve["positions"]), "by_num_strings": curve}
    return ProtocolResult(metrics=metrics, extras=extras)


register("protocol", "icll")(Protocol(
    name="icll", requires="sequence_model", params=ICLLParams, run=run_icll, data_kind="icl_dfa",
    budget=first_test("test instances"),
))
