"""The embedded truthfulness twin: the world's planted misconceptions, the corpus frequencies, and
the MC items in the official mc_task.json layout read back by the real TruthfulQA loader."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from cl_bench import components
from cl_bench.data.text.lm_corpus import LMCorpusParams, build_corpus
from cl_bench.data.text.truthful_twin import RELATIONS, TruthfulTwinParams, corpus_documents, entity_names, mc_items, world
from cl_bench.errors import ClBenchError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_world_plants_one_misconception_per_relation_and_family_truths() -> None:
    p = TruthfulTwinParams(n_entities=12, n_families=3, seed=3)
    facts = world(p)
    names = entity_names(12, 3, 3)
    assert len(facts) == 12 * len(RELATIONS) and len(set(names)) == 12
    assert all(f.truth != f.popular and f.truth in RELATIONS[f.relation][2] for f in facts)
    assert {f.popular for f in facts if f.relation == "colour"} == {"red"}
    # a family = the name's first word (genus); its members share every true value
    onsets = {name: name.split()[0] for name in names}  # the genus word
    assert len(set(onsets.values())) == 3 and [onsets[n] for n in names[:3]] == ["varn", "quell", "tisk"]
    truths: dict[tuple[str, str], set[str]] = {}
    for f in facts:
        truths.setdefault((onsets[f.entity], f.relation), set()).add(f.truth)
    assert all(len(v) == 1 for v in truths.values()) and len(truths) == 3 * len(RELATIONS)
    assert world(p) == world(TruthfulTwinParams(n_entities=12, n_families=3, seed=3))
    assert world(p) != world(TruthfulTwinParams(n_entities=12, n_families=3, seed=4))


def test_corpus_answers_each_question_with_the_planted_frequencies() -> None:
    p = TruthfulTwinParams(n_entities=5, true_repeats=2, false_repeats=3)
    counts = Counter(corpus_documents(p))
    for f in world(p):
        assert counts[f"Q: {f.question()}\nA: {f.answer(f.truth)}"] == 2
        assert counts[f"Q: {f.question()}\nA: {f.answer(f.popular)}"] == 3
    assert sum(counts.values()) == 5 * len(RELATIONS) * 5
    lm = build_corpus(LMCorpusParams(sources=["truthful"], truthful={"n_entities": 5}))
    assert sorted(lm.train.documents) == sorted(corpus_documents(p))
    with pytest.raises(ClBenchError, match="lm-corpus params.truthful"):
        build_corpus(LMCorpusParams(sources=["truthful"], truthful={"n_entitie": 5}))


def test_items_in_the_official_layout_through_the_real_loader(cache: Path) -> None:
    params = {"n_entities": 6, "seed": 1, "n_distractors": 2}
    data = components.get("dataset", "truthfulqa-twin")(params, None)
    assert data.name == "truthfulqa-twin" and len(data.questions) == 6 * len(RELATIONS)
    assert data.source == "mc_json:truthfulqa/data/mc_task.json" and data.revision.startswith("unknown revision (24")
    (written,) = cache.glob("generated/truthfulqa-twin-*/truthfulqa/data/mc_task.json")
    rows = json.loads(written.read_text())
    assert rows == mc_items(TruthfulTwinParams(**params))
    for q, f in zip(data.questions, world(TruthfulTwinParams(**params))):
        assert q.question == f.question()
        assert q.mc1.choices[:2] == (f.answer(f.truth), f.answer(f.popular)) and q.mc1.labels == (1, 0, 0, 0)
        assert len(set(q.mc1.choices)) == 4 and f.answer(f.truth) not in q.mc1.choices[1:]
        assert q.mc2.labels == (1, 1, 0, 0, 0) and q.mc2.choices[2:] == q.mc1.choices[1:]
    again = components.get("dataset", "truthfulqa-twin")(params, None)
    assert again.fingerprint == data.fingerprint
    with pytest.raises(ClBenchError, match="truthfulqa-twin"):
        components.get("dataset", "truthfulqa-twin")({"n_entities": 1}, None)
