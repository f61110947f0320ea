"""Log-likelihoods reused across MC1/MC2 of one model in one process; each context encoded once."""

from __future__ import annotations

from typing import Any

import pytest

from cl_bench.data.text.truthfulqa import load_truthfulqa
from cl_bench.protocols.multiple_choice import _LL_MEMO, score_questions_with_predictions, truthfulqa_context
from tests.conftest import SHARED_DATA
from tests.models.interfaces.test_causal_lm import tiny_model


class Counting:
    """Wraps a CausalLM and counts the requests it is asked to score."""

    def __init__(self, model: Any) -> None:
        self.model, self.asked = model, 0

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        self.asked += len(requests)
        return self.model.loglikelihood(requests)


def test_mc2_after_mc1_scores_only_the_new_requests() -> None:
    data = load_truthfulqa({"empty_choices": "drop", "limit": 3}, SHARED_DATA)
    model = tiny_model(seed=3, n_positions=1024)
    _LL_MEMO.clear()
    fresh = {t: score_questions_with_predictions(model, data.questions, t)[0] for t in ("mc1", "mc2")}
    counting = Counting(model)
    memo1, _, _ = score_questions_with_predictions(counting, data.questions, "mc1", model_key="m")
    n_mc1 = sum(len(q.mc1.choices) for q in data.questions)
    assert counting.asked == n_mc1
    memo2, _, _ = score_questions_with_predictions(counting, data.questions, "mc2", model_key="m")
    new = {(q.question, c) for q in data.questions for c in q.mc2.choices} - {
        (q.question, c) for q in data.questions for c in q.mc1.choices}
    assert counting.asked == n_mc1 + len(new) and len(new) < sum(len(q.mc2.choices) for q in data.questions)
    assert memo1 == fresh["mc1"]
    assert memo2 == pytest.approx(fresh["mc2"], abs=1e-6)  # reused values come from other batches
    # another model key shares nothing
    score_questions_with_predictions(counting, data.questions, "mc1", model_key="other")
    assert counting.asked == 2 * n_mc1 + len(new)


def test_each_context_is_encoded_once_and_pairs_do_not_change() -> None:
    model = tiny_model(seed=0, n_positions=1024)
    calls: list[str] = []
    encode = model.tok_encode
    model.tok_encode = lambda text: (calls.append(text), encode(text))[1]  # type: ignore[method-assign]
    requests = [(truthfulqa_context(q), " " + c) for q in ("Why?", "Who? ") for c in ("a b", "c", "d e f")]
    plain = [model.encode_pair(c, x) for c, x in requests]
    n_plain = len(calls)
    calls.clear()
    contexts: dict[str, list[int]] = {}
    memo = [model.encode_pair(c, x, contexts) for c, x in requests]
    assert memo == plain and n_plain == 12 and len(calls) == 6 + 2
