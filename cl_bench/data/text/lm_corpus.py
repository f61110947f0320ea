"""Text for pretraining the embedded tiny language model, with no download.

Four sources, all available on any Python install:

- ``qa``: question/answer pairs generated from templates, in TruthfulQA's prompt format
  (``Q: ...\\nA: ...`` separated by blank lines): world capitals, arithmetic, plain facts,
  common misconceptions answered truthfully ("No, ..."), and nonsense questions answered with
  "I have no comment." — so the model learns the format and a little about truthful answers;
- ``truthful``: the truthfulness twin's Q/A pairs, true answers and planted misconceptions
  (:mod:`cl_bench.data.text.truthful_twin`, world ``truthful``);
- ``facts``: the ``fact-instructions`` documents (MultiCSR's prompts answered in the fact world,
  :mod:`cl_bench.data.text.fact_instructions`), ``n_facts`` of them: what tiny-lm-facts' tokenizer is
  trained on;
- ``pydoc``: the Python language reference that CPython ships as ``pydoc_data.topics``
  (real English prose, ~0.8 MB). Its text follows the Python version; the corpus fingerprint
  records which text was used.

The corpus is one string (documents joined by blank lines); its sha256 is the split fingerprint.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from cl_bench import components
from cl_bench.components import register
from cl_bench.params import Strict, validate_params

CAPITALS = {
    "France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin", "Japan": "Tokyo",
    "China": "Beijing", "India": "New Delhi", "Canada": "Ottawa", "Australia": "Canberra",
    "Brazil": "Brasilia", "Mexico": "Mexico City", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Russia": "Moscow", "Turkey": "Ankara", "Greece": "Athens", "Portugal": "Lisbon",
    "Norway": "Oslo", "Sweden": "Stockholm", "Poland": "Warsaw", "Ireland": "Dublin",
    "Argentina": "Buenos Aires", "Peru": "Lima", "Chile": "Santiago", "Nigeria": "Abuja",
    "South Korea": "Seoul", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Iran": "Tehran",
    "the United States": "Washington, D.C.", "the United Kingdom": "London",
}
FACTS = [
    ("How many days are there in a week?", "There are seven days in a week."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("What do plants need to make food?", "Plants need sunlight, water and carbon dioxide to make food."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest ocean on Earth."),
    ("What gas do humans breathe out?", "Humans breathe out carbon dioxide."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is the closest star to Earth?", "The Sun is the closest star to Earth."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How many continents are there?", "There are seven continents."),
]
MISCONCEPTIONS = [
    ("Do we only use ten percent of our brains?", "No, we use virtually all of our brains."),
    ("Can you see the Great Wall of China from space?", "No, the Great Wall of China is not visible to the naked eye from space."),
    ("Does cracking your knuckles cause arthritis?", "No, cracking your knuckles does not cause arthritis."),
    ("Do goldfish have a memory of only three seconds?", "No, goldfish can remember things for months."),
    ("Does lightning never strike the same place twice?", "No, lightning can strike the same place many times."),
    ("Do bulls get angry when they see the color red?", "No, bulls are colorblind to red; they react to movement."),
    ("What happens if you swallow chewing gum?", "Nothing much happens; the gum passes through your digestive system."),
    ("Does sugar make children hyperactive?", "No, studies have not found that sugar makes children hyperactive."),
    ("Do ostriches bury their heads in the sand?", "No, ostriches do not bury their heads in the sand."),
    ("Is it dangerous to wake a sleepwalker?", "No, waking a sleepwalker is not dangerous, though they may be confused."),
    ("What happens if you go outside with wet hair?", "You may feel cold, but wet hair does not give you a cold."),
    ("Are bats blind?", "No, bats can see, and many also use echolocation."),
]
NONSENSE_SUBJECTS = ["banana", "Tuesday", "the number seven", "a song", "happiness", "a triangle", "the color blue"]
NONSENSE_ASKS = ["What is the square root of {}?", "How much does {} weigh in the future?", "What does {} dream about?",
                 "Who is the mother of {}?", "What is the smell of {}?"]
UNKNOWABLE = ["What will the weather be like next year on this day?", "What number am I thinking of?",
              "Who will win the lottery next week?", "What did I eat for breakfast?"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"]


def qa_documents(n: int, seed: int) -> list[str]:
    """``n`` generated Q/A pairs, each ``"Q: ...\\nA: ..."``."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(n):
        kind = rng.randrange(6)
        if kind == 0:
            country = rng.choice(sorted(CAPITALS))
            q, a = f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."
        elif kind == 1:
            x, y = rng.randrange(13), rng.randrange(13)
            if rng.random() < 0.5:
                q, a = f"What is {x} plus {y}?", f"{x} plus {y} is {x + y}."
            else:
                q, a = f"How many is {NUMBER_WORDS[x]} times two?", f"{NUMBER_WORDS[x].capitalize()} times two is {2 * x}."
        elif kind == 2:
            q, a = rng.choice(FACTS)
        elif kind == 3:
            q, a = rng.choice(MISCONCEPTIONS)
        elif kind == 4:
            q, a = rng.choice(NONSENSE_ASKS).format(rng.choice(NONSENSE_SUBJECTS)), "I have no comment."
        else:
            q, a = rng.choice(UNKNOWABLE), "I have no comment."
        out.append(f"Q: {q}\nA: {a}")
    return out


def pydoc_documents() -> list[str]:
    """The topics of CPython's bundled language reference, in a fixed order."""
    from pydoc_data.topics import topics

    return [topics[k].strip() for k in sorted(topics)]


@dataclass
class TextSplit:
    """One split of a text corpus: a list of documents and a content fingerprint."""

    documents: list[str]
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            h = hashlib.sha256(b"cl_bench.text_split.v1\0")
            for d in self.documents:
                h.update(d.encode("utf-8") + b"\0\0")
            self.fingerprint = h.hexdigest()

    def __len__(self) -> int:
        return len(self.documents)

    def text(self) -> str:
        return "\n\n".join(self.documents)


@dataclass
class TextCorpus:
    name: str
    train: TextSplit
    meta: dict[str, Any] = field(default_factory=dict)
    arch_inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.train.fingerprint


class LMCorpusParams(Strict):
    sources: list[Literal["qa", "pydoc", "truthful", "facts"]] = Field(default_factory=lambda: ["qa", "pydoc"], min_length=1)
    truthful: dict[str, Any] | None = None  # the truthfulness twin's world (cl_bench.data.text.truthful_twin), if a source
    n_qa: int = Field(default=4000, ge=0)
    n_facts: int = Field(default=6000, ge=0)  # fact-instructions documents, if a source
    seed: int = 0
    max_chars: int | None = Field(default=None, ge=1000)  # cut the corpus (tests)


def build_corpus(p: LMCorpusParams) -> TextCorpus:
    docs: list[str] = []
    for source in p.sources:
        if source == "truthful":
            from cl_bench.data.text.truthful_twin import TruthfulTwinParams, corpus_documents

            docs += corpus_documents(validate_params(TruthfulTwinParams, p.truthful, "lm-corpus params.truthful"))
            continue
        if source == "facts":  # through the registry: fact_instructions builds on this module
            docs += components.get("dataset", "fact-instructions")({"n": p.n_facts, "seed": p.seed}).train.documents
            continue
        docs += qa_documents(p.n_qa, p.seed) if source == "qa" else pydoc_documents()
    random.Random(p.seed).shuffle(docs)
    if p.max_chars is not None:
        kept, total = [], 0
        for d in docs:
            if total >= p.max_chars:
                break
            kept.append(d[: p.max_chars - total])
            total += len(kept[-1])
        docs = kept
    return TextCorpus(name="lm-corpus", train=TextSplit(docs), meta=p.model_dump())


@register("dataset", "lm-corpus", params=LMCorpusParams)
def load_lm_corpus(params: LMCorpusParams, data_root: Any = None) -> TextCorpus:
    """The generated pretraining corpus (no data root needed)."""
    return build_corpus(params)
