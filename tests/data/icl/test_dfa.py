"""DFA generation: documented ranges, minimality, language-preservation and train/test disjointness."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cl_bench.data.icl.dfa import (
    DFA,
    IGNORE,
    PAD,
    SEP,
    ICLLParams,
    decode,
    generate,
    minimize,
    sample_raw_dfa,
)
from cl_bench.errors import ClBenchError

SMALL = ICLLParams(n_train=300, n_test=60, seed=3)


@pytest.fixture(scope="module")
def data():
    return generate(SMALL)


def words_upto(alphabet: list[int], n: int):
    for k in range(n + 1):
        yield from itertools.product(alphabet, repeat=k)


def brute_force_minimal_states(dfa: DFA, depth: int) -> int:
    """Number of Myhill–Nerode classes among reachable states, told apart by suffixes up to ``depth``."""
    sigma = dfa.alphabet
    reach = {0}
    frontier = [0]
    while frontier:
        s = frontier.pop()
        for _, t in dfa.edges[s]:
            if t not in reach:
                reach.add(t)
                frontier.append(t)

    def accepts_from(s: int, w: tuple[int, ...]) -> bool:
        for a in w:
            if a not in dfa.table[s]:
                return False
            s = dfa.table[s][a]
        return True

    suffixes = list(words_upto(sigma, depth))
    return len({tuple(accepts_from(s, w) for w in suffixes) for s in reach})


def test_raw_dfa_respects_the_documented_ranges():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(4, 13))
        dfa = sample_raw_dfa(rng, n, sorted(rng.choice(18, size=int(rng.integers(4, 19)), replace=False)), 3)
        assert dfa.n_states == n
        for s, edges in enumerate(dfa.edges):
            assert len(edges) in range(1, 4)
            syms, targets = [a for a, _ in edges], [t for _, t in edges]
            assert len(set(syms)) == len(syms) and len(set(targets)) == len(targets)
            assert s not in targets  # no self loops


def test_minimize_keeps_the_language_and_is_minimal():
    rng = np.random.default_rng(1)
    for _ in range(60):
        raw = sample_raw_dfa(rng, int(rng.integers(4, 9)), [0, 1, 2, 3], 3)
        small = minimize(raw)
        assert small.n_states <= raw.n_states
        for w in words_upto([0, 1, 2, 3], 5):
            assert raw.accepts(w) == small.accepts(w)
        # every state of the result is distinguishable from every other (checked by brute force)
        assert brute_force_minimal_states(small, depth=small.n_states) == small.n_states


def test_minimize_merges_equivalent_states_and_is_canonical():
    # states 1 and 2 both read "a" into state 3: they are equivalent
    a, b = 0, 1
    dfa = DFA([[(a, 1), (b, 2)], [(a, 3)], [(a, 3)], [(b, 0)]])
    small = minimize(dfa)
    assert small.n_states == 3
    relabelled = DFA([[(a, 3), (b, 2)], [(b, 0)], [(a, 1)], [(a, 1)]])  # states 1 and 3 swapped
    assert minimize(relabelled).key == small.key


def test_generated_dataset_ranges_and_disjointness(data):
    p = SMALL
    assert len(data.train) == p.n_train and len(data.test) == p.n_test
    train_keys = {d.key for d in data.train.dfas}
    test_keys = {d.key for d in data.test.dfas}
    assert not train_keys & test_keys
    assert len(train_keys) == p.n_train and len(test_keys) == p.n_test
    for split in (data.train, data.test):
        for dfa, seq in zip(split.dfas, split.sequences):
            assert dfa.n_states in range(1, p.max_states + 1)
            assert len(dfa.alphabet) <= p.max_alphabet
            assert all(1 <= len(e) <= p.max_edges for e in dfa.edges)
            strings = decode(seq).split("|")
            assert p.min_strings <= len(strings) <= p.max_strings
            for s in strings:
                assert p.min_length <= len(s) <= p.max_length
                assert dfa.accepts([ord(c) - ord("a") for c in s])
            assert PAD not in seq.tolist()


def test_generation_is_deterministic_and_seeded():
    a, b = generate(ICLLParams(n_train=20, n_test=5, seed=7)), generate(ICLLParams(n_train=20, n_test=5, seed=7))
    c = generate(ICLLParams(n_train=20, n_test=5, seed=8))
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_batch_targets_ignore_separator_and_pad(data):
    inputs, targets = data.test.batch([0, 1])
    seq0 = data.test.sequences[0].astype(int).tolist()
    n = len(seq0) - 1
    assert inputs[0, :n].tolist() == seq0[:-1]
    for t in range(inputs.shape[1]):
        if t >= n:
            assert targets[0, t] == IGNORE and inputs[0, t] == PAD
        elif seq0[t + 1] == SEP:
            assert targets[0, t] == IGNORE
        else:
            assert targets[0, t] == seq0[t + 1]


def test_bad_ranges_are_one_line_errors():
    from cl_bench.data.icl.dfa import load_icll

    with pytest.raises(ClBenchError, match="min_states"):
        load_icll({"min_states": 9, "max_states": 5})
    with pytest.raises(ClBenchError, match="distinct DFAs"):
        load_icll({"n_train": 50, "n_test": 10, "min_states": 2, "max_states": 2, "min_alphabet": 1,
                   "max_alphabet": 1, "max_edges": 1})
