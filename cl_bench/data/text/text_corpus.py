"""Generated English text: a training corpus and two embedded evaluation sets (no download).

Every sentence states one *fact* — agent, action, patient, place, time — rendered through one of
several templates (active, passive, fronted place/time) with one of two synonym sets, so the
same fact has many surface forms and different facts share words.

- ``text-corpus``: documents of 4–8 sentences about one agent in one place (neighbouring
  sentences share entities: CCP's context), for SimCSE / CCP training.
- ``paraphrase-mining``: a bitext-like set: ``source[i]`` (active voice, synonym set A) and
  ``target[i]`` (another template, synonym set B) state the same fact; the distractors share
  up to four of its five slots. Scored by the ``bitext`` protocol.
- ``sts-synthetic``: pairs of facts with a gold similarity = the number of shared slots (0–5),
  each side rendered independently. Scored by the ``sts`` protocol.

Deterministic for a seed; the generator's version is part of every fingerprint.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cl_bench.components import register
from cl_bench.data.text.types import BitextData, BitextPair, ScoredPairData, TextCorpus, TextSplit
from cl_bench.specs import validate_params

GENERATOR_VERSION = "facts-v1"

AGENTS = [
    ("the old farmer", "the elderly farmer"), ("a young girl", "a little girl"),
    ("the tall doctor", "the lanky physician"), ("my neighbour", "the man next door"),
    ("the teacher", "the schoolteacher"), ("a sailor", "a seaman"), ("the baker", "the bread maker"),
    ("a police officer", "a policeman"), ("the student", "the pupil"), ("an artist", "a painter"),
    ("the mayor", "the head of the town"), ("a tourist", "a traveller"),
]
# (past tense A, past tense B, participle A, participle B)
VERBS = [
    ("carried", "transported", "carried", "transported"), ("found", "discovered", "found", "discovered"),
    ("bought", "purchased", "bought", "purchased"), ("watched", "observed", "watched", "observed"),
    ("cleaned", "washed", "cleaned", "washed"), ("repaired", "fixed", "repaired", "fixed"),
    ("hid", "concealed", "hidden", "concealed"), ("sold", "traded away", "sold", "traded away"),
]
PATIENTS = [
    ("a red ball", "a crimson ball"), ("the wooden chair", "the timber chair"), ("a small dog", "a little dog"),
    ("the old car", "the aged automobile"), ("a blue box", "an azure box"), ("the big kettle", "the large kettle"),
    ("a heavy suitcase", "a weighty suitcase"), ("the broken clock", "the damaged clock"),
    ("a green bicycle", "a green bike"), ("the silver key", "the silvery key"),
    ("a strange painting", "an odd picture"), ("the empty bottle", "the vacant bottle"),
]
PLACES = [
    ("in the garden", "in the yard"), ("at the station", "at the railway station"),
    ("near the river", "by the river"), ("in the kitchen", "inside the kitchen"),
    ("on the beach", "on the seashore"), ("at the market", "at the bazaar"),
    ("in the library", "among the library shelves"), ("behind the school", "at the back of the school"),
]
TIMES = [
    ("in the morning", "early in the day"), ("last night", "yesterday evening"), ("on Sunday", "on the Sunday"),
    ("after lunch", "following lunch"), ("before sunrise", "before dawn"), ("in winter", "during the winter"),
]
SLOTS = (AGENTS, VERBS, PATIENTS, PLACES, TIMES)
Fact = tuple[int, int, int, int, int]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def render(fact: Fact, template: int, syn: int) -> str:
    """One sentence stating ``fact`` with template 0–3 and synonym set 0 (A) or 1 (B)."""
    a, v, p, pl, t = fact
    agent, patient, place, time = AGENTS[a][syn], PATIENTS[p][syn], PLACES[pl][syn], TIMES[t][syn]
    past, part = VERBS[v][syn], VERBS[v][2 + syn]
    if template == 0:
        return f"{_cap(agent)} {past} {patient} {place} {time}."
    if template == 1:
        return f"{_cap(time)}, {patient} was {part} by {agent} {place}."
    if template == 2:
        return f"{_cap(place)}, {agent} {past} {patient} {time}."
    return f"{_cap(patient)} was {part} {place} by {agent} {time}."


def random_fact(rng: random.Random) -> Fact:
    return tuple(rng.randrange(len(s)) for s in SLOTS)  # type: ignore[return-value]


def distinct_facts(n: int, rng: random.Random) -> list[Fact]:
    total = int(np.prod([len(s) for s in SLOTS]))
    if n > total:
        raise ValueError(f"at most {total} distinct facts")
    seen: set[Fact] = set()
    out: list[Fact] = []
    while len(out) < n:
        f = random_fact(rng)
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out


def generate_documents(n_docs: int, min_len: int, max_len: int, seed: int) -> tuple[list[str], list[int]]:
    """Documents about one agent in one place; each sentence varies the action, object and time."""
    rng = random.Random(f"{GENERATOR_VERSION}:corpus:{seed}")
    texts: list[str] = []
    doc_ids: list[int] = []
    for d in range(n_docs):
        agent, place = rng.randrange(len(AGENTS)), rng.randrange(len(PLACES))
        for _ in range(rng.randint(min_len, max_len)):
            pl = place if rng.random() < 0.8 else rng.randrange(len(PLACES))
            fact = (agent, rng.randrange(len(VERBS)), rng.randrange(len(PATIENTS)), pl, rng.randrange(len(TIMES)))
            texts.append(render(fact, rng.randrange(4), rng.randrange(2)))
            doc_ids.append(d)
    return texts, doc_ids


def generate_paraphrases(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(f"{GENERATOR_VERSION}:paraphrase:{seed}")
    facts = distinct_facts(n, rng)
    source = [render(f, 0, 0) for f in facts]
    target = [render(f, rng.choice((1, 2, 3)), 1) for f in facts]
    return source, target


def generate_sts(n: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    rng = random.Random(f"{GENERATOR_VERSION}:sts:{seed}")
    first, second, gold = [], [], []
    for _ in range(n):
        f1 = random_fact(rng)
        keep = rng.random()  # share of slots kept: spreads the gold scores over 0..5
        f2 = tuple(
            x if rng.random() < keep else rng.choice([y for y in range(len(s)) if y != x])
            for x, s in zip(f1, SLOTS, strict=True)
        )
        first.append(render(f1, rng.randrange(4), rng.randrange(2)))
        second.append(render(f2, rng.randrange(4), rng.randrange(2)))  # type: ignore[arg-type]
        gold.append(float(sum(a == b for a, b in zip(f1, f2, strict=True))))
    return first, second, np.asarray(gold)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0


class CorpusParams(_Params):
    n_docs: int = Field(default=2000, ge=1)
    min_sentences: int = Field(default=4, ge=2)
    max_sentences: int = Field(default=8, ge=2)


class PairSetParams(_Params):
    n: int = Field(default=500, ge=2, le=20000)


@register("dataset", "text-corpus")
def load_text_corpus(params: dict[str, Any], data_root: Path | None = None) -> TextCorpus:
    p = validate_params(CorpusParams, params, "dataset text-corpus params")
    lo, hi = sorted((p.min_sentences, p.max_sentences))
    texts, doc_ids = generate_documents(p.n_docs, lo, hi, p.seed)
    return TextCorpus(f"text-corpus/{GENERATOR_VERSION}", TextSplit(texts, np.asarray(doc_ids)),
                      meta={"generator": GENERATOR_VERSION, "n_docs": p.n_docs, "seed": p.seed})


@register("dataset", "paraphrase-mining")
def load_paraphrase_mining(params: dict[str, Any], data_root: Path | None = None) -> BitextData:
    p = validate_params(PairSetParams, {"seed": 1, **(params or {})}, "dataset paraphrase-mining params")
    source, target = generate_paraphrases(p.n, p.seed)
    pair = BitextPair("active-paraphrase", TextSplit(source), TextSplit(target), meta={"generator": GENERATOR_VERSION})
    return BitextData(f"paraphrase-mining/{GENERATOR_VERSION}", [pair], meta={"seed": p.seed, "n": p.n})


@register("dataset", "sts-synthetic")
def load_sts_synthetic(params: dict[str, Any], data_root: Path | None = None) -> ScoredPairData:
    p = validate_params(PairSetParams, {"seed": 2, **(params or {})}, "dataset sts-synthetic params")
    first, second, gold = generate_sts(p.n, p.seed)
    return ScoredPairData(f"sts-synthetic/{GENERATOR_VERSION}", TextSplit(first), TextSplit(second), gold,
                          meta={"seed": p.seed, "n": p.n, "gold": "number of shared fact slots, 0-5"})
