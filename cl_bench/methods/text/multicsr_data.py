"""MultiCSR stages 1 and 2: sentence pairs generated and scored by a causal LM, then curated.

Written from the authors' ``flan_generate_scoring.py`` and ``flan_filter.py``
(Circle-Ming/MultiCSR):

- **Stage 1, generation and scoring.** For each premise the LM writes an entailment and a
  contradiction (greedy decoding, the prompts of :mod:`cl_bench.data.text.fact_instructions`), then
  scores the similarity of (premise, contradiction) and (premise, entailment) with the scoring
  prompt. A row survives only when both answers parse as scores (``d`` or ``d.d``); if the
  contradiction scores <= 4.0 and the entailment at least as high, the row is
  (premise, entailment, contradiction); else, if the entailment scores <= 4.0 and no higher than
  the contradiction, the two are swapped (the LM's "contradiction" is the better positive);
  other rows are dropped.
- **Stage 2, self-curation** (``filter_type`` 15, the README's default): keep a row when its
  negative scores <= ``negative_line`` (3), its positive >= ``positive_line`` (3) and, with
  ``similarity_gap``, the two scores differ.

``unrefined`` rows are the raw generations (premise, entailment, contradiction) with no scoring
at all: what a pipeline without MultiCSR's refinement trains on (the ablation).
Generation is batched with left padding through the model's Hugging Face ``generate`` (any
``HFCausalLM``: ``tiny-gpt2``, ``hf-causal-lm``), greedy, cut at the first newline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cl_bench.data.text.fact_instructions import generation_prompt, parse_fact, parse_generation, parse_score, scoring_prompt
from cl_bench.errors import ClBenchError


@dataclass(frozen=True)
class Generated:
    """One premise with what the LM wrote and how it scored it (None: unparseable)."""

    premise: str
    entailment: str
    contradiction: str
    entailment_score: float | None
    contradiction_score: float | None


@dataclass(frozen=True)
class Triplet:
    premise: str
    positive: str
    negative: str
    positive_score: float | None = None
    negative_score: float | None = None


def _hf_parts(lm: Any) -> tuple[Any, Any]:
    hf, tok = getattr(lm, "hf", None), getattr(lm, "tokenizer", None)
    if hf is None or tok is None:
        raise ClBenchError(f"MultiCSR's generator must be a Hugging Face causal LM (tiny-gpt2, hf-causal-lm), not {type(lm).__name__}")
    return hf, tok


def fits(lm: Any, prompts: Sequence[str], new_tokens: int | Sequence[int]) -> list[bool]:
    """Whether each prompt plus ``new_tokens`` (one count, or one per prompt) fits the generator's
    context (always, without a limit)."""
    _, tok = _hf_parts(lm)
    limit = getattr(lm, "max_length", None)
    need = [new_tokens] * len(prompts) if isinstance(new_tokens, int) else list(new_tokens)
    if limit is None:
        return [True] * len(prompts)
    return [len(ids) + n <= limit for ids, n in zip(tok(list(prompts))["input_ids"], need, strict=True)]


@torch.no_grad()
def generate_greedy(lm: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 32,
                    too_long: str = "raise") -> list[str]:
    """Greedy continuations of ``prompts`` (batched, left-padded), decoded without special tokens.
    Generation stops where the generator's context ends; a prompt that leaves no room: a ClBenchError
    (``too_long`` "raise"), or with ``"empty"`` every prompt without room for ``max_new_tokens`` gets
    the empty answer without generating."""
    hf, tok = _hf_parts(lm)
    if too_long == "empty":
        ok = fits(lm, prompts, max_new_tokens)
        kept = [p for p, f in zip(prompts, ok, strict=True) if f]
        answers = iter(generate_greedy(lm, kept, max_new_tokens, batch_size) if kept else [])
        return [next(answers) if f else "" for f in ok]
    saved_side, saved_pad = tok.padding_side, tok.pad_token
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    device = next(hf.parameters()).device
    limit = getattr(lm, "max_length", None)
    out: list[str] = []
    try:
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
        texts: dict[int, str] = {}
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True)
            new_tokens = max_new_tokens
            if limit is not None:  # generation stops where the generator's context ends
                new_tokens = min(max_new_tokens, limit - enc["input_ids"].shape[1])
                if new_tokens < 1:
                    raise ClBenchError(
                        f"a MultiCSR prompt of {enc['input_ids'].shape[1]} tokens leaves no room for an answer in "
                        f"the generator's context of {limit} tokens"
                    )
            ids = hf.generate(
                input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                max_new_tokens=new_tokens, do_sample=False, num_beams=1,
                pad_token_id=tok.pad_token_id, eos_token_id=lm.eot_token_id,
            )
            new = ids[:, enc["input_ids"].shape[1] :]
            for i, row in zip(idx, tok.batch_decode(new, skip_special_tokens=True), strict=True):
                texts[i] = row
        out = [texts[i] for i in range(len(prompts))]
    finally:
        tok.padding_side, tok.pad_token = saved_side, saved_pad
    return out


def causal_prompt(prompt: str) -> str:
    """The prompt a causal LM continues: the authors' text without its trailing whitespace, which
    belongs to the answer. Their prompts end in ``': `` (written for Flan-T5, whose encoder reads
    the prompt apart from the answer); a byte-level BPE spells the written-out answer as ``':`` +
    `` '`` + ..., so a prompt ending in a lone space token is one the LM never saw before an answer."""
    return prompt.rstrip()


def generate_and_score(lm: Any, premises: Sequence[str], max_new_tokens: int = 48, batch_size: int = 32) -> list[Generated]:
    """Stage 1's LM calls: an entailment, a contradiction and the two similarity scores per premise.
    A scoring prompt (premise + generated sentence) too long for the context gets no score, so its
    row is dropped as an unparseable one (the premises themselves are chosen to fit: :func:`premise_fits`)."""
    ent = [parse_generation(t) for t in generate_greedy(lm, [causal_prompt(generation_prompt("entailment", p)) for p in premises], max_new_tokens, batch_size)]
    con = [parse_generation(t) for t in generate_greedy(lm, [causal_prompt(generation_prompt("negative", p)) for p in premises], max_new_tokens, batch_size)]
    score_prompts = [scoring_prompt(p, c) for p, c in zip(premises, con, strict=True)]
    score_prompts += [scoring_prompt(p, e) for p, e in zip(premises, ent, strict=True)]
    answers = generate_greedy(lm, score_prompts, 4, batch_size, too_long="empty")  # unparseable: row dropped
    n = len(premises)
    return [
        Generated(premises[i], ent[i], con[i], parse_score(answers[n + i].split("\n")[0]), parse_score(answers[i].split("\n")[0]))
        for i in range(n)
    ]


def premise_fits(lm: Any, premises: Sequence[str], max_new_tokens: int) -> list[bool]:
    """Whether both generation prompts of each premise leave room in the generator's context for an
    answer as long as the premise plus one token (a rewrite of it), or ``max_new_tokens`` if fewer."""
    _, tok = _hf_parts(lm)
    need = [min(max_new_tokens, len(ids) + 1) for ids in tok(list(premises))["input_ids"]]
    kinds = [fits(lm, [generation_prompt(k, p) for p in premises], need) for k in ("entailment", "negative")]
    return [a and b for a, b in zip(*kinds, strict=True)]


def stage1_rows(generated: Sequence[Generated]) -> list[Triplet]:
    """The authors' stage-1 rule: both scores parse; order the pair by score (see the module doc)."""
    rows: list[Triplet] = []
    for g in generated:
        e, c = g.entailment_score, g.contradiction_score
        if e is None or c is None or not g.entailment or not g.contradiction:
            continue
        if c <= 4.0 and e >= c:
            rows.append(Triplet(g.premise, g.entailment, g.contradiction, e, c))
        elif e <= 4.0 and e <= c:
            rows.append(Triplet(g.premise, g.contradiction, g.entailment, c, e))
    return rows


def curate(rows: Sequence[Triplet], positive_line: float = 3.0, negative_line: float = 3.0,
           similarity_gap: bool = True) -> list[Triplet]:
    """Stage 2 (self-curation): positive >= positive_line, negative <= negative_line, scores differ."""
    kept = []
    for r in rows:
        assert r.positive_score is not None and r.negative_score is not None
        if r.negative_score <= negative_line and r.positive_score >= positive_line:
            if not similarity_gap or r.positive_score != r.negative_score:
                kept.append(r)
    return kept


def unrefined_rows(generated: Sequence[Generated]) -> list[Triplet]:
    """Raw generations as (premise, entailment, contradiction): no scoring, no curation."""
    return [Triplet(g.premise, g.entailment, g.contradiction) for g in generated if g.entailment and g.contradiction]


def pair_quality(rows: Sequence[Triplet]) -> dict[str, float | int]:
    """How often, in the fact world, a row's positive states the premise's fact and its negative does not."""
    n = len(rows)
    pos_same = neg_differs = parsed = 0
    for r in rows:
        p, q, m = parse_fact(r.premise), parse_fact(r.positive), parse_fact(r.negative)
        if p is None or q is None or m is None:
            continue
        parsed += 1
        pos_same += q == p
        neg_differs += m != p
    return {
        "rows": n,
        "parsed": parsed,
        "positive_same_fact": round(pos_same / parsed, 4) if parsed else 0.0,
        "negative_other_fact": round(neg_differs / parsed, 4) if parsed else 0.0,
    }
