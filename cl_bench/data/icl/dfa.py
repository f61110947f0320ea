"""``icll-dfa``: in-context language learning instances from random DFAs (Akyürek et al., arXiv
2401.12973; reference code berlino/seq_icl ``src/dataloaders/dfa.py``, PROTOCOLS.md §9a).

Vocabulary: 20 tokens — the letters ``a``..``r`` (ids 0–17), the separator ``|`` (18) and the
pad ``.`` (19). A DFA is sampled as in the reference: #states ~ U{4..12}; an alphabet of
U{4..18} letters drawn without replacement; per state U{1..3} outgoing edges with distinct
symbols and distinct targets, never to itself; state 0 starts; every state accepts (a missing
edge rejects). Strings are drawn from it as a probabilistic automaton: uniform choice among the
outgoing edges. The DFA is then minimised (partition refinement with an implicit dead state),
trimmed (unreachable states dropped) and renumbered canonically (breadth-first from the start,
symbols in order), so two DFAs have the same ``key`` exactly when they accept the same
language. Train and test DFAs are drawn from one pool of distinct keys, so no test language
is seen in training. An instance is U{10..19} strings of length U{1..49} joined by ``|``.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.specs import validate_params

LETTERS = "abcdefghijklmnopqr"
SEP = 18
PAD = 19
VOCAB: tuple[str, ...] = (*LETTERS, "|", ".")
VOCAB_SIZE = len(VOCAB)
IGNORE = -100  # target value the loss and metrics skip (pad, and the separator as in the reference)


class DFA:
    """A partial DFA over token ids: ``edges[s]`` = sorted ((symbol, target), ...); start 0; all accept."""

    __slots__ = ("_key", "edges", "table")

    def __init__(self, edges: Sequence[Sequence[tuple[int, int]]]) -> None:
        self.edges: tuple[tuple[tuple[int, int], ...], ...] = tuple(tuple(sorted(e)) for e in edges)
        self.table: list[dict[int, int]] = [dict(e) for e in self.edges]
        self._key: str | None = None

    @property
    def n_states(self) -> int:
        return len(self.edges)

    @property
    def alphabet(self) -> list[int]:
        return sorted({sym for e in self.edges for sym, _ in e})

    def accepts(self, word: Sequence[int]) -> bool:
        state = 0
        for sym in word:
            nxt = self.table[state].get(int(sym))
            if nxt is None:
                return False
            state = nxt
        return True

    def sample(self, rng: np.random.Generator, length: int) -> list[int]:
        """A word of ``length`` symbols, each edge chosen uniformly among the state's outgoing ones."""
        out: list[int] = []
        state = 0
        for u in rng.random(length).tolist():
            edges = self.edges[state]
            sym, state = edges[int(u * len(edges))]
            out.append(sym)
        return out

    @property
    def key(self) -> str:
        """sha256 of the transition table (canonical for a minimised, renumbered DFA)."""
        if self._key is None:
            blob = ";".join(",".join(f"{a}>{t}" for a, t in e) for e in self.edges)
            self._key = hashlib.sha256(blob.encode()).hexdigest()
        return self._key

    def to_json(self) -> list[list[list[int]]]:
        return [[[a, t] for a, t in e] for e in self.edges]

    def __repr__(self) -> str:
        return f"DFA({self.n_states} states, alphabet {''.join(VOCAB[a] for a in self.alphabet)})"


def sample_raw_dfa(rng: np.random.Generator, n_states: int, alphabet: Sequence[int], max_edges: int) -> DFA:
    """Per state U{1..max_edges} edges: distinct symbols of ``alphabet``, distinct targets, no self loop."""
    edges = []
    for s in range(n_states):
        others = [t for t in range(n_states) if t != s]
        k = int(rng.integers(1, min(max_edges, len(alphabet), len(others)) + 1))
        symbols = rng.choice(np.asarray(alphabet), size=k, replace=False)
        targets = rng.choice(np.asarray(others), size=k, replace=False)
        edges.append([(int(a), int(t)) for a, t in zip(symbols, targets)])
    return DFA(edges)


def minimize(dfa: DFA) -> DFA:
    """The minimal trimmed DFA of the same language, renumbered canonically (BFS, symbols sorted)."""
    # reachable states only
    reach, queue = {0}, deque([0])
    while queue:
        s = queue.popleft()
        for _, t in dfa.edges[s]:
            if t not in reach:
                reach.add(t)
                queue.append(t)
    states = sorted(reach)
    sigma = sorted({a for s in states for a, _ in dfa.edges[s]})
    dead = -1
    # Moore partition refinement; the dead state (rejecting sink) starts in its own block
    block = {s: 0 for s in states}
    block[dead] = 1
    while True:
        sigs: dict[int, tuple[int, ...]] = {
            s: (block[s], *(block[dfa.table[s].get(a, dead)] for a in sigma)) for s in states
        }
        sigs[dead] = (block[dead], *([block[dead]] * len(sigma)))
        ids: dict[tuple[int, ...], int] = {}
        new = {s: ids.setdefault(sig, len(ids)) for s, sig in sorted(sigs.items())}
        if len(ids) == len(set(block.values())):
            break
        block = new
    dead_block = block[dead]
    # canonical numbering: BFS from the start block, symbols in increasing order
    rep = {}
    for s in states:
        rep.setdefault(block[s], s)
    order = {block[0]: 0}
    queue = deque([block[0]])
    edges: list[list[tuple[int, int]]] = []
    while queue:
        b = queue.popleft()
        row = []
        for a, t in sorted(dfa.edges[rep[b]]):
            tb = block[t]
            if tb == dead_block:
                continue
            if tb not in order:
                order[tb] = len(order)
                queue.append(tb)
            row.append((a, order[tb]))
        edges.append(row)
    return DFA(edges)


class ICLLParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_train: int = Field(default=5000, ge=1)
    n_test: int = Field(default=250, ge=1)
    min_states: int = Field(default=4, ge=2)
    max_states: int = Field(default=12, ge=2, le=64)
    min_alphabet: int = Field(default=4, ge=1)
    max_alphabet: int = Field(default=18, le=len(LETTERS))
    max_edges: int = Field(default=3, ge=1)
    min_strings: int = Field(default=10, ge=1)
    max_strings: int = Field(default=19, ge=1)
    min_length: int = Field(default=1, ge=1)
    max_length: int = Field(default=49, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _ranges(self) -> ICLLParams:
        for lo, hi in (("min_states", "max_states"), ("min_alphabet", "max_alphabet"),
                       ("min_strings", "max_strings"), ("min_length", "max_length")):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo} ({getattr(self, lo)}) exceeds {hi} ({getattr(self, hi)})")
        return self


@dataclass
class DFASplit:
    """Instances (token-id arrays, separator-joined strings) and the DFA each was drawn from."""

    dfas: list[DFA]
    sequences: list[np.ndarray]
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            h = hashlib.sha256()
            for d, s in zip(self.dfas, self.sequences):
                h.update(d.key.encode())
                h.update(np.asarray(s, dtype=np.int64).tobytes() + b"\0")
            self.fingerprint = h.hexdigest()

    def __len__(self) -> int:
        return len(self.sequences)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs [B, T] (padded with PAD) and next-token targets [B, T] (IGNORE at pad and at ``|``)."""
        seqs = [self.sequences[i] for i in indices]
        width = max(len(s) for s in seqs) - 1
        inputs = torch.full((len(seqs), width), PAD, dtype=torch.long)
        targets = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        for row, s in enumerate(seqs):
            t = torch.as_tensor(np.asarray(s, dtype=np.int64))
            n = len(t) - 1
            inputs[row, :n] = t[:-1]
            nxt = t[1:].clone()
            nxt[nxt == SEP] = IGNORE
            targets[row, :n] = nxt
        return inputs, targets


@dataclass
class DFAData:
    name: str
    train: DFASplit
    test: DFASplit
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for part in (self.name, self.train.fingerprint, self.test.fingerprint):
            h.update(part.encode() + b"\0")
        return h.hexdigest()

    @property
    def arch_inputs(self) -> dict[str, Any]:
        longest = max(len(s) for split in (self.train, self.test) for s in split.sequences)
        max_len = self.params["max_strings"] * (self.params["max_length"] + 1) - 1
        return {"input_kind": "tokens", "vocab_size": VOCAB_SIZE, "pad_id": PAD,
                "max_positions": max(max_len, longest)}


def sample_instance(rng: np.random.Generator, dfa: DFA, p: ICLLParams) -> np.ndarray:
    k = int(rng.integers(p.min_strings, p.max_strings + 1))
    lengths = rng.integers(p.min_length, p.max_length + 1, size=k)
    out: list[int] = []
    for i, n in enumerate(lengths.tolist()):
        if i:
            out.append(SEP)
        out += dfa.sample(rng, n)
    return np.asarray(out, dtype=np.int8)


def sample_dfa(rng: np.random.Generator, p: ICLLParams) -> tuple[DFA, int]:
    """A minimised random DFA and the number of states it was sampled with."""
    n = int(rng.integers(p.min_states, p.max_states + 1))
    size = int(rng.integers(p.min_alphabet, p.max_alphabet + 1))
    alphabet = np.sort(rng.choice(len(LETTERS), size=size, replace=False))
    return minimize(sample_raw_dfa(rng, n, alphabet.tolist(), p.max_edges)), n


def generate(p: ICLLParams) -> DFAData:
    """Distinct DFAs (by language), shuffled and split into train and test; one instance each."""
    rng = np.random.default_rng(p.seed)
    need = p.n_train + p.n_test
    pool: dict[str, DFA] = {}
    for _ in range(20 * need):
        dfa, _ = sample_dfa(rng, p)
        pool.setdefault(dfa.key, dfa)
        if len(pool) == need:
            break
    else:
        raise ClBenchError(
            f"icll-dfa: only {len(pool)} distinct DFAs found for n_train + n_test = {need}; "
            "widen the state/alphabet ranges or ask for fewer instances"
        )
    dfas = list(pool.values())
    order = rng.permutation(len(dfas))
    dfas = [dfas[i] for i in order]
    splits = []
    for part in (dfas[: p.n_train], dfas[p.n_train :]):
        splits.append(DFASplit(part, [sample_instance(rng, d, p) for d in part]))
    return DFAData("icll-dfa", splits[0], splits[1], p.model_dump())


def decode(tokens: Sequence[int]) -> str:
    return "".join(VOCAB[int(t)] for t in tokens)


@register("dataset", "icll-dfa")
def load_icll(params: dict[str, Any], data_root: Path | None = None) -> DFAData:
    """Generated (no files): ``data_root`` is not used."""
    return generate(validate_params(ICLLParams, params, "dataset icll-dfa params"))
