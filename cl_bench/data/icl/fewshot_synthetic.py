"""``icl-fewshot-synthetic``: generated rule-based string classification, the embedded twin of the
few-shot suite (SST-2 / AG News / TREC / RTE style), needing no download.

Each rule is a classification task whose label follows from the input string by a fixed rule,
so a model can only solve it from the demonstrations (or a prior it happens to have):

- ``sentiment-keywords``: 4–8 words of neutral filler with one sentiment keyword (from
  7 positive, 7 negative words); SST-2's format (``Review: ...\\nSentiment:``), label words
  Negative / Positive;
- ``majority-ab``: an odd number (5–9) of space-separated ``a``/``b`` letters; label = the more
  frequent letter, label words ``a`` / ``b``;
- ``first-last``: 3–8 letters from ``a``–``h``; label ``same`` when the first letter equals the
  last, else ``different`` (balanced by construction);
- ``word-topic``: 3–6 words drawn from one of three small topic vocabularies (animals, food,
  places) with filler; label = the topic (label words animal / food / place).

Train (the demonstration pool) and test are drawn from the same rule with different seeds and
no test string appears in train. Examples go through the same ``records_to_examples`` as JSONL
files of the real loader.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field

from cl_bench.components import register
from cl_bench.data.icl.fewshot_text import (
    FewShotSplit,
    FewShotTextData,
    FewShotTextParams,
    PromptFormat,
    records_to_examples,
)
from cl_bench.errors import ClBenchError
from cl_bench.params import Strict

FILLER = ["the", "movie", "was", "plot", "story", "film", "scene", "music", "and", "very", "quite", "a", "it", "this"]
POSITIVE = ["good", "great", "nice", "happy", "best", "love", "fine"]
NEGATIVE = ["bad", "awful", "poor", "sad", "worst", "hate", "boring"]
TOPICS = {
    "animal": ["dog", "cat", "horse", "bird", "fish", "cow", "lion"],
    "food": ["bread", "apple", "rice", "cheese", "soup", "cake", "egg"],
    "place": ["city", "river", "mountain", "village", "beach", "forest", "road"],
}
TOPIC_FILLER = ["the", "a", "and", "of", "with", "near", "big", "small", "old"]
LETTERS = list("abcdefgh")

Rule = Literal["sentiment-keywords", "majority-ab", "first-last", "word-topic"]


class SyntheticFewShotParams(Strict):
    rule: Rule = "sentiment-keywords"
    n_train: int = Field(default=256, ge=1)
    n_test: int = Field(default=200, ge=1)
    seed: int = 0


def _sentiment(rng: random.Random) -> tuple[str, int]:
    label = rng.randrange(2)
    words = [rng.choice(FILLER) for _ in range(rng.randint(3, 7))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
    return " ".join(words), label


def _majority(rng: random.Random) -> tuple[str, int]:
    letters = [rng.choice("ab") for _ in range(rng.choice([5, 7, 9]))]
    return " ".join(letters), int(letters.count("b") > letters.count("a"))


def _first_last(rng: random.Random) -> tuple[str, int]:
    n = rng.randint(3, 8)
    letters = [rng.choice(LETTERS) for _ in range(n)]
    same = rng.randrange(2) == 0
    if same:
        letters[-1] = letters[0]
    else:
        letters[-1] = rng.choice([c for c in LETTERS if c != letters[0]])
    return " ".join(letters), 0 if same else 1


def _topic(rng: random.Random) -> tuple[str, int]:
    label = rng.randrange(len(TOPICS))
    vocab = TOPICS[list(TOPICS)[label]]
    n = rng.randint(3, 6)
    words = [rng.choice(TOPIC_FILLER) for _ in range(n - 1)]
    words.insert(rng.randrange(n), rng.choice(vocab))
    if rng.random() < 0.5:
        words.insert(rng.randrange(len(words) + 1), rng.choice(vocab))
    return " ".join(words), label


RULES: dict[str, tuple[Any, list[str], PromptFormat]] = {
    "sentiment-keywords": (_sentiment, ["Negative", "Positive"],
                           PromptFormat(input_prefix="Review: ", output_prefix="\nSentiment:")),
    "majority-ab": (_majority, ["a", "b"], PromptFormat(input_prefix="Letters: ", output_prefix="\nMost:")),
    "first-last": (_first_last, ["same", "different"], PromptFormat(input_prefix="Letters: ", output_prefix="\nEnds:")),
    "word-topic": (_topic, list(TOPICS), PromptFormat(input_prefix="Text: ", output_prefix="\nTopic:")),
}


def generate_records(rule: str, n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict[str, Any]]:
    """``n`` distinct ``{text, label}`` records of ``rule`` whose text is not in ``exclude``."""
    gen = RULES[rule][0]
    rng = random.Random(f"{rule}:{seed}")
    seen: set[str] = set(exclude)
    out: list[dict[str, Any]] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise ClBenchError(f"rule {rule}: cannot draw {n} distinct strings (too few possible); lower n")
        text, label = gen(rng)
        if text in seen:
            continue
        seen.add(text)
        out.append({"text": text, "label": label})
    return out


@register("dataset", "icl-fewshot-synthetic", params=SyntheticFewShotParams)
def load_fewshot_synthetic(p: SyntheticFewShotParams, data_root: Any = None) -> FewShotTextData:
    _, words, fmt = RULES[p.rule]
    test = generate_records(p.rule, p.n_test, 2 * p.seed + 1)
    train = generate_records(p.rule, p.n_train, 2 * p.seed, exclude={r["text"] for r in test})
    fields = FewShotTextParams(text_field="text", label_field="label", label_words=words)
    return FewShotTextData(
        name=f"icl-fewshot-synthetic/{p.rule}",
        train=FewShotSplit(records_to_examples(train, fields, "generated train")),
        test=FewShotSplit(records_to_examples(test, fields, "generated test")),
        label_words=words, format=fmt, meta=p.model_dump(),
    )


# --- a pretraining corpus of few-shot episodes (for a tiny LM that learns to learn in context) ---

LABEL_WORD_POOL = ["yes", "no", "red", "blue", "up", "down", "one", "two", "left", "right", "cold", "hot",
                   "Positive", "Negative", "same", "different", "animal", "food", "place", "a", "b", "foo", "bar"]


class FewShotCorpusParams(Strict):
    rules: list[Rule] = Field(default_factory=lambda: list(RULES), min_length=1)
    n_episodes: int = Field(default=3000, ge=1)
    min_shots: int = Field(default=2, ge=0)
    max_shots: int = Field(default=16, ge=1)
    canonical_words: float = Field(default=0.0, ge=0, le=1)  # share of episodes with the rule's own label words
    # where an episode's label words come from: ``pool`` = drawn from LABEL_WORD_POOL; ``permuted`` =
    # the rule's own words in a random order (flipped labels: the scored words, with no mapping prior)
    label_words: Literal["pool", "permuted"] = "pool"
    # the words of the ``canonical_words`` share, in class order (default: the rule's own words)
    canonical_label_words: list[str] | None = Field(default=None, min_length=2)
    seed: int = 0


def episode_documents(p: FewShotCorpusParams) -> list[str]:
    """Few-shot episodes: ``k + 1`` labelled examples of one rule in its prompt format; the label
    words are drawn per episode from ``LABEL_WORD_POOL`` (``label_words: pool``) or are the rule's
    own words in a random order (``permuted``), so the mapping must be read from the context,
    except in a ``canonical_words`` share of episodes, labelled in class order with the rule's
    words or ``canonical_label_words``."""
    rng = random.Random(f"corpus:{p.seed}")
    docs = []
    for _ in range(p.n_episodes):
        rule = rng.choice(p.rules)
        gen, words, fmt = RULES[rule]
        if rng.random() >= p.canonical_words:
            words = rng.sample(LABEL_WORD_POOL if p.label_words == "pool" else words, len(words))
        elif p.canonical_label_words is not None:
            words = p.canonical_label_words
        parts = []
        for _ in range(rng.randint(p.min_shots, p.max_shots) + 1):
            text, label = gen(rng)
            parts.append(fmt.input_prefix + text + fmt.output_prefix + fmt.target_delimiter + words[label])
        docs.append(fmt.instruction + fmt.example_separator.join(parts))
    return docs


@register("dataset", "icl-fewshot-corpus", params=FewShotCorpusParams)
def load_fewshot_corpus(p: FewShotCorpusParams, data_root: Any = None) -> Any:
    from cl_bench.data.text.lm_corpus import TextCorpus, TextSplit

    if p.min_shots > p.max_shots:
        raise ClBenchError(f"icl-fewshot-corpus: min_shots {p.min_shots} > max_shots {p.max_shots}")
    fixed = p.canonical_label_words
    if fixed is not None and any(len(RULES[r][1]) != len(fixed) for r in p.rules):
        raise ClBenchError(f"icl-fewshot-corpus: canonical_label_words {fixed} need one word per class of every "
                           f"rule in {p.rules}; list as many words as the rules have classes")
    return TextCorpus(name="icl-fewshot-corpus", train=TextSplit(episode_documents(p)), meta=p.model_dump())
