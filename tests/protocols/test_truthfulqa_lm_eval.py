"""TruthfulQA MC1 / MC2 per question against lm-evaluation-harness itself (the PyPI package, driven
offline): its own truthfulqa_mc1/mc2 task YAMLs and ``utils.process_results_mc2``, its ``HFLM``
on the same untrained tiny GPT-2, the real 2025 TruthfulQA questions handed over as a local
dataset, empty answers kept (lm-eval's behaviour, our default). MC3, which lm-eval lacks, is
checked on lm-eval's own per-choice log-likelihoods against a rewrite of TruthfulQA's
``MC_calcs`` ("each correct answer vs all false answers", strict >)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cl_bench.data.text.truthfulqa import load_truthfulqa
from cl_bench.protocols.multiple_choice import score_questions, truthfulqa_context
from tests.conftest import SHARED_DATA
from tests.models.interfaces.test_causal_lm import tiny_model

pytestmark = pytest.mark.slow


def _questions() -> list[Any]:
    """Every question with an empty answer string (the behaviour under test) and the first 40."""
    qs = load_truthfulqa({}, SHARED_DATA).questions
    with_empty = [q for q in qs if "" in q.mc1.choices or "" in q.mc2.choices]
    assert len(with_empty) >= 20
    return qs[:40] + [q for q in with_empty if q not in qs[:40]]


def _lm_eval_samples(model: Any, questions: list[Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict]]:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets
    import lm_eval
    from lm_eval import simple_evaluate
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks._yaml_loader import load_yaml

    docs = [
        {"question": q.question,
         "mc1_targets": {"choices": list(q.mc1.choices), "labels": list(q.mc1.labels)},
         "mc2_targets": {"choices": list(q.mc2.choices), "labels": list(q.mc2.labels)}}
        for q in questions
    ]
    folder = Path(lm_eval.__file__).parent / "tasks" / "truthfulqa"
    tasks = []
    for name in ("truthfulqa_mc1", "truthfulqa_mc2"):
        cfg = load_yaml(folder / f"{name}.yaml")  # lm-eval's own loader: include + !function
        cfg.pop("tag", None)
        cfg["custom_dataset"] = lambda **_: datasets.DatasetDict({"validation": datasets.Dataset.from_list(docs)})
        tasks.append(ConfigurableTask(config=cfg))
    lm = HFLM(pretrained=model.hf, tokenizer=model.tokenizer, batch_size=16, device="cpu")
    out = simple_evaluate(model=lm, tasks=tasks, log_samples=True, bootstrap_iters=0)
    return {name: sorted(out["samples"][name], key=lambda r: r["doc_id"]) for name in ("truthfulqa_mc1", "truthfulqa_mc2")}


def mc_calcs_mc3(scores_true: list[float], scores_false: list[float]) -> float:
    """TruthfulQA MC_calcs, MC3: sum(scores_true > max(scores_false)) / len(scores_true)."""
    max_false = max(scores_false)
    return sum(1 for s in scores_true if s > max_false) / float(len(scores_true))


def test_mc1_mc2_per_question_equal_lm_eval_and_mc3_equals_mc_calcs(monkeypatch: pytest.MonkeyPatch) -> None:
    questions = _questions()
    model = tiny_model(seed=11, n_positions=1024)
    ref = _lm_eval_samples(model, questions, monkeypatch)
    ours = {t: score_questions(model, questions, t)[0] for t in ("mc1", "mc2", "mc3")}
    mc1_ref = [float(r["acc"]) for r in ref["truthfulqa_mc1"]]
    mc2_ref = [float(r["acc"]) for r in ref["truthfulqa_mc2"]]
    assert len(mc1_ref) == len(mc2_ref) == len(questions)
    assert ours["mc1"] == mc1_ref
    assert np.abs(np.asarray(ours["mc2"]) - np.asarray(mc2_ref)).max() < 1e-4
    # an untrained model's mass follows answer length (each token costs ~log V), so most MC2 values
    # sit near 0 or 1: the per-choice log-likelihoods behind them are compared too, each to 1e-4
    for name, lists in (("truthfulqa_mc1", "mc1"), ("truthfulqa_mc2", "mc2")):
        requests = [(truthfulqa_context(q.question), " " + c) for q in questions for c in getattr(q, lists).choices]
        mine = [ll for ll, _ in model.loglikelihood(requests)]
        theirs = [float(x[0]) for r in ref[name] for x in r["filtered_resps"]]
        assert len(mine) == len(theirs) and np.abs(np.asarray(mine) - np.asarray(theirs)).max() < 1e-4
    # lm-eval scored the empty answers as " " (kept): one request per choice, empty ones included
    for r, q in zip(ref["truthfulqa_mc2"], questions):
        assert len(r["filtered_resps"]) == len(q.mc2.choices)
        if "" in q.mc2.choices:
            assert (r["arguments"][q.mc2.choices.index("")][1]) == " "
    mc3_ref = []
    for r, q in zip(ref["truthfulqa_mc2"], questions):
        lls = [float(x[0]) for x in r["filtered_resps"]]
        mc3_ref.append(mc_calcs_mc3([ll for ll, lab in zip(lls, q.mc2.labels) if lab == 1],
                                    [ll for ll, lab in zip(lls, q.mc2.labels) if lab == 0]))
    assert np.abs(np.asarray(ours["mc3"]) - np.asarray(mc3_ref)).max() < 1e-12
