"""In-memory views of text datasets: splits of sentences, bitext pairs, scored sentence pairs."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cl_bench.errors import ClBenchError


def fingerprint_texts(texts: list[str], extra: str = "") -> str:
    """sha256 over the texts in order (length-prefixed, so boundaries are unambiguous)."""
    h = hashlib.sha256(b"cl_bench.texts.v1\0" + extra.encode() + b"\0")
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


class TextSplit:
    """An ordered list of texts (what a text encoder embeds), with a content fingerprint.

    ``doc_ids`` (optional, one int per text) groups consecutive texts into documents: the
    neighbours of a sentence within its document are its context (CCP's positives).
    """

    def __init__(self, texts: list[str], doc_ids: np.ndarray | None = None) -> None:
        self.texts = list(texts)
        self.doc_ids = None if doc_ids is None else np.asarray(doc_ids, dtype=np.int64)
        if self.doc_ids is not None and len(self.doc_ids) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.doc_ids)} doc ids")
        extra = "" if self.doc_ids is None else hashlib.sha256(self.doc_ids.tobytes()).hexdigest()
        self.fingerprint = fingerprint_texts(self.texts, extra)

    def __len__(self) -> int:
        return len(self.texts)


def _combine(name: str, parts: list[str]) -> str:
    h = hashlib.sha256(name.encode() + b"\0")
    for p in parts:
        h.update(p.encode() + b"\0")
    return h.hexdigest()


class _NoTrainingText:
    """Evaluation-only text data: asking it for training text is a user error with a fix."""

    name: str

    @property
    def train(self) -> Any:
        raise ClBenchError(
            f"dataset '{self.name}' is evaluation-only; a method that trains a text encoder must name "
            "its training text in train.data (e.g. {name: text-corpus})"
        )


@dataclass
class BitextPair:
    """One language pair: ``source[i]`` and ``target[i]`` are translations of each other."""

    name: str  # e.g. "deu-eng"
    source: TextSplit
    target: TextSplit
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.source) != len(self.target):
            raise ClBenchError(
                f"bitext pair {self.name}: {len(self.source)} source but {len(self.target)} target sentences"
            )
        if len(self.source) == 0:
            raise ClBenchError(f"bitext pair {self.name} is empty")


@dataclass
class BitextData(_NoTrainingText):
    """Several aligned pairs, evaluated one by one and averaged."""

    name: str
    pairs: list[BitextPair]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        parts = [f"{p.name}:{p.source.fingerprint}:{p.target.fingerprint}" for p in self.pairs]
        return _combine(self.name, parts)


@dataclass
class ScoredPairData(_NoTrainingText):
    """Sentence pairs with a gold similarity score each (STS-style)."""

    name: str
    first: TextSplit
    second: TextSplit
    gold: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.gold = np.asarray(self.gold, dtype=np.float64)
        if not (len(self.first) == len(self.second) == len(self.gold)):
            raise ClBenchError(
                f"{self.name}: {len(self.first)} first sentences, {len(self.second)} second, {len(self.gold)} scores"
            )
        if len(self.gold) < 2:
            raise ClBenchError(f"{self.name}: an STS set needs at least 2 scored pairs")

    @property
    def fingerprint(self) -> str:
        gold = hashlib.sha256(np.ascontiguousarray(self.gold).tobytes()).hexdigest()
        return _combine(self.name, [self.first.fingerprint, self.second.fingerprint, gold])


@dataclass
class TextCorpus:
    """Unlabelled training text (documents of sentences); ``train`` is what trainers read."""

    name: str
    train: TextSplit
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return _combine(self.name, [self.train.fingerprint])
