"""icl-fewshot-corpus: how an episode's label words are chosen (pool / permuted / a fixed
canonical pair), and that tiny-lm-icl pretrains on the exact prompts the few-shot suite scores,
with no prior for which label word goes with which class."""

from __future__ import annotations

import re

import pytest

from cl_bench.data.icl.fewshot_synthetic import (
    LABEL_WORD_POOL,
    NEGATIVE,
    POSITIVE,
    FewShotCorpusParams,
    episode_documents,
    load_fewshot_corpus,
    load_fewshot_synthetic,
)
from cl_bench.data.icl.fewshot_text import FewShotExample
from cl_bench.errors import ClBenchError
from cl_bench.protocols import fewshot_prompts as fp
from cl_bench.registry import Registry

EXAMPLE = re.compile(r"Review: (.*)\nSentiment: (.*)")


def _polarity(text: str) -> int:
    """1 positive / 0 negative, from the keyword lists (independent of the generator)."""
    words = set(text.split())
    assert len(words & set(POSITIVE)) + len(words & set(NEGATIVE)) == 1
    return int(bool(words & set(POSITIVE)))


def _mapping(doc: str) -> dict[int, str]:
    """The episode's polarity -> label word; fails if the episode labels one polarity two ways."""
    out: dict[int, str] = {}
    for part in doc.split("\n\n"):
        text, word = EXAMPLE.fullmatch(part).groups()
        assert out.setdefault(_polarity(text), word) == word
    return out


def test_permuted_episodes_use_the_rules_words_in_both_orders() -> None:
    docs = episode_documents(FewShotCorpusParams(rules=["sentiment-keywords"], n_episodes=400, min_shots=6,
                                                 label_words="permuted"))
    maps = [_mapping(d) for d in docs]
    full = [m for m in maps if len(m) == 2]
    assert len(full) > 350 and all(set(m.values()) == {"Negative", "Positive"} for m in full)
    flipped = sum(m[1] == "Negative" for m in full) / len(full)
    assert 0.4 < flipped < 0.6  # each class takes each word about equally often: nothing to learn but the context


def test_pool_episodes_are_unchanged_and_draw_from_the_pool() -> None:
    docs = episode_documents(FewShotCorpusParams(rules=["sentiment-keywords"], n_episodes=200, min_shots=6))
    words = {w for d in docs for w in _mapping(d).values()}
    assert words <= set(LABEL_WORD_POOL) and len(words) > 10
    assert docs == episode_documents(FewShotCorpusParams(rules=["sentiment-keywords"], n_episodes=200, min_shots=6,
                                                         label_words="pool"))


def test_the_canonical_share_uses_the_given_words_in_class_order() -> None:
    p = FewShotCorpusParams(rules=["sentiment-keywords"], n_episodes=400, min_shots=6, label_words="permuted",
                            canonical_words=0.5, canonical_label_words=["no", "yes"])
    maps = [m for m in map(_mapping, episode_documents(p)) if len(m) == 2]
    fixed = [m for m in maps if set(m.values()) == {"no", "yes"}]
    assert all(m == {0: "no", 1: "yes"} for m in fixed)
    assert 0.4 < len(fixed) / len(maps) < 0.6
    assert all(set(m.values()) == {"Negative", "Positive"} for m in maps if m not in fixed)


def test_canonical_words_must_match_every_rules_classes() -> None:
    with pytest.raises(ClBenchError, match="one word per class"):
        load_fewshot_corpus({"rules": ["sentiment-keywords", "word-topic"], "canonical_label_words": ["no", "yes"]})


def test_tiny_lm_icl_pretrains_on_the_scored_prompts_with_flipped_episodes() -> None:
    """Every pretraining episode is, token for token, a prompt of the protocol (demonstration block +
    query + continuation) labelled with the task's two words (the old corpus drew them from a 23-word
    pool), and about a quarter of the episodes flip the mapping (half are permuted), so a model that
    only learnt the prior misses those: getting them right needs reading the context."""
    spec = Registry().method("tiny-lm-icl")
    p = FewShotCorpusParams.model_validate({**spec.train.data.params, "n_episodes": 300})
    task = load_fewshot_synthetic({"rule": "sentiment-keywords", "n_train": 8, "n_test": 4})
    scored = episode_documents(p)
    flipped = 0
    for doc in scored:
        mapping = _mapping(doc)
        assert set(mapping.values()) <= set(task.label_words)
        flipped += mapping.get(1) == "Negative" or mapping.get(0) == "Positive"
        exs = [FewShotExample(text=t, label=task.label_words.index(w))
               for t, w in (EXAMPLE.fullmatch(x).groups() for x in doc.split(task.format.example_separator))]
        assert fp.prompt(task, exs[:-1], exs[-1]) + task.continuation(exs[-1].label) == doc
    assert 0.18 < flipped / len(scored) < 0.32
