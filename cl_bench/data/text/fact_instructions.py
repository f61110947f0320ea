"""MultiCSR's prompts, and a corpus that teaches a small causal LM to answer them in the fact world.

MultiCSR (Wang et al., NAACL 2024, arXiv 2310.10962; Circle-Ming/MultiCSR) prompts an LLM
(Flan-T5-XL) three ways, with the wording of its ``flan_generate_scoring.py``:

- entailment: ``Help me write a sentence that is entailment with a given sentence. Here are
  some examples:`` + two demonstrations ``Write a sentence that is entailment with '{x}': '{y}'``
  + the query ``Write a sentence that is entailment with '{premise}': ``;
- contradiction: the same with ``negative`` in place of ``entailment``;
- scoring: ``Scoring the semantic similarity of the following sentences between 0.0 and 5.0:
  (a) {s1} (b) {s2}``, answered with a number (the authors' code keeps answers of the form
  ``d`` or ``d.d``; the whitespace of their Python line continuation is one space here).

The demonstrations are the authors' form with sentences of the embedded fact world
(``cl_bench.data.text.text_corpus``), since the LM here knows only that world.

``fact-instructions`` (a dataset for ``lm-pretrain``) is what makes a 1-M-parameter LM an
"LLM of the fact world": documents that are these prompts followed by a correct answer —
an entailment states the same fact with another template and synonym set; a contradiction
changes one or two of the five slots (MultiCSR's "changing one or two specific elements");
a score is the number of shared slots, ``k.0`` (the gold of ``sts-synthetic``). The premises
come from another seed than the evaluation sets'. ``parse_fact`` reads a sentence of the world
back into its fact, so the quality of what the LM generates can be measured.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from pydantic import Field

from cl_bench.components import register
from cl_bench.data.text.lm_corpus import TextCorpus, TextSplit
from cl_bench.data.text.text_corpus import GENERATOR_VERSION, PATIENTS, SLOTS, Fact, random_fact, render
from cl_bench.specs import Strict, validate_params

PROMPTS_VERSION = "multicsr-prompts-v1"

# two fixed demonstrations per prompt (the authors use two), from the fact world
_DEMO_FACTS: list[Fact] = [(0, 2, 5, 3, 1), (7, 4, 9, 6, 2)]


def _demo(kind: str, i: int) -> tuple[str, str]:
    fact = _DEMO_FACTS[i]
    premise = render(fact, 0, 0)
    if kind == "entailment":
        return premise, render(fact, 1 + i, 1)
    changed = list(fact)
    changed[2] = (changed[2] + 3) % len(PATIENTS)  # a different object
    return premise, render(tuple(changed), 2 - i, i % 2)  # type: ignore[arg-type]


def generation_prompt(kind: str, premise: str) -> str:
    """The authors' entailment (``kind="entailment"``) or contradiction (``"negative"``) prompt."""
    if kind not in ("entailment", "negative"):
        raise ValueError(f"kind must be entailment or negative, not {kind!r}")
    text = f"Help me write a sentence that is {kind} with a given sentence. Here are some examples:\n\n"
    for i in range(2):
        x, y = _demo(kind, i)
        text += f"Write a sentence that is {kind} with '{x}': '{y}'\n\n"
    return text + f"Write a sentence that is {kind} with '{premise.strip()}': "


def scoring_prompt(first: str, second: str) -> str:
    return f"Scoring the semantic similarity of the following sentences between 0.0 and 5.0: (a) {first} (b) {second}"


_SCORE = re.compile(r"^[0-5](\.[0-9])?$")


def parse_score(answer: str) -> float | None:
    """The authors' acceptance rule: ``d`` (0-5) or ``d.d`` with d in 0-5 first; else None."""
    text = answer.strip()
    return float(text) if _SCORE.match(text) else None


def parse_generation(answer: str) -> str:
    """A generated sentence without the quotes and the trailing blank line the prompt format adds."""
    text = answer.strip().split("\n")[0].strip()
    if len(text) >= 2 and text[0] == "'" and text.endswith("'"):
        text = text[1:-1]
    return text.strip("'").strip()


# --- reading a sentence of the world back into its fact -------------------------------------------
def _slot_patterns() -> list[list[tuple[int, re.Pattern[str]]]]:
    out = []
    for s, options in enumerate(SLOTS):
        pats = []
        for i, forms in enumerate(options):
            # every surface form of the value: both synonym sets (verbs: past tense and participle)
            alternation = "|".join(sorted({re.escape(f) for f in forms}, key=len, reverse=True))
            pats.append((i, re.compile(rf"(?<![a-z]){alternation}(?![a-z])", re.IGNORECASE)))
        out.append(pats)
    return out


_PATTERNS = _slot_patterns()


def parse_fact(sentence: str) -> Fact | None:
    """The fact a sentence of the world states, or None when a slot is missing or ambiguous."""
    fact = []
    for pats in _PATTERNS:
        hits = {i for i, pat in pats if pat.search(sentence)}
        if len(hits) != 1:
            return None
        fact.append(hits.pop())
    return tuple(fact)  # type: ignore[return-value]


def shared_slots(a: Fact, b: Fact) -> int:
    return sum(x == y for x, y in zip(a, b, strict=True))


# --- the corpus ------------------------------------------------------------------------------------
def _other_rendering(fact: Fact, template: int, syn: int, rng: random.Random) -> str:
    choices = [(t, s) for t in range(4) for s in range(2) if (t, s) != (template, syn)]
    t, s = rng.choice(choices)
    return render(fact, t, s)


def _changed(fact: Fact, rng: random.Random, n_changes: int) -> Fact:
    out = list(fact)
    for slot in rng.sample(range(len(SLOTS)), n_changes):
        out[slot] = rng.choice([v for v in range(len(SLOTS[slot])) if v != fact[slot]])
    return tuple(out)  # type: ignore[return-value]


def instruction_documents(n: int, seed: int) -> list[str]:
    """``n`` documents: a MultiCSR prompt followed by a correct answer (1/3 of each kind)."""
    rng = random.Random(f"{GENERATOR_VERSION}:{PROMPTS_VERSION}:{seed}")
    docs: list[str] = []
    for i in range(n):
        fact, template, syn = random_fact(rng), rng.randrange(4), rng.randrange(2)
        premise = render(fact, template, syn)
        kind = i % 3
        if kind == 0:
            docs.append(generation_prompt("entailment", premise) + f"'{_other_rendering(fact, template, syn, rng)}'")
        elif kind == 1:
            other = _changed(fact, rng, rng.choice((1, 2)))
            docs.append(generation_prompt("negative", premise) + f"'{render(other, rng.randrange(4), rng.randrange(2))}'")
        else:
            other = _changed(fact, rng, rng.randrange(6)) if rng.random() < 0.9 else random_fact(rng)
            second = render(other, rng.randrange(4), rng.randrange(2))
            docs.append(scoring_prompt(premise, second) + f" {float(shared_slots(fact, other)):.1f}")
    return docs


class FactInstructionParams(Strict):
    n: int = Field(default=6000, ge=3, le=1_000_000)
    seed: int = 0


@register("dataset", "fact-instructions")
def load_fact_instructions(params: dict[str, Any], data_root: Path | None = None) -> TextCorpus:
    p = validate_params(FactInstructionParams, params, "dataset fact-instructions params")
    return TextCorpus(name=f"fact-instructions/{PROMPTS_VERSION}", train=TextSplit(instruction_documents(p.n, p.seed)),
                      meta=p.model_dump())
