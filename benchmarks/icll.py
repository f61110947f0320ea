"""Speed of the ICLL suite: generating 10,000 instances and scoring greedy predictions on them.

Reports seconds per 1,000 instances for (a) generation (random DFAs, minimisation, disjoint
split, instances), (b) scoring with ``score_positions`` (one DFA step per position), against the
reference's string procedure (join the characters, split on " | ", run the DFA on the current
word at every position — as ``_get_dfa_accuracy`` does) measured in the same run, and (c) the
in-context trigram baseline. Usage: ``python benchmarks/icll.py [--n 10000] [--paper]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cl_bench.data.icl.dfa import VOCAB, ICLLParams, generate
from cl_bench.protocols.icll import ngram_predictions, score_positions


def string_procedure(inputs: list[int], preds: list[int], dfa) -> tuple[int, int]:
    chars = [VOCAB[t] for t in inputs]
    correct = total = 0
    for t in range(len(chars)):
        if t + 1 < len(chars) and chars[t + 1] == "|":
            continue
        word = " ".join(chars[: t + 1] + [VOCAB[preds[t]]]).split(" | ")[-1].split(" ")
        ok = all(c in VOCAB[:18] for c in word) and dfa.accepts([VOCAB.index(c) for c in word])
        correct += ok
        total += 1
    return correct, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--peer-n", type=int, default=1_000, help="instances for the (slow) string procedure")
    ap.add_argument("--paper", action="store_true", help="strings of length 1-49 (icll-dfa-paper)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    p = ICLLParams(n_train=args.n - 250, n_test=250, max_length=49 if args.paper else 9)
    t0 = time.perf_counter()
    data = generate(p)
    gen_s = time.perf_counter() - t0
    split = [(s[:-1].astype(int).tolist(), d) for sp in (data.train, data.test) for s, d in zip(sp.sequences, sp.dfas)]
    rng = np.random.default_rng(0)
    preds = [rng.integers(0, 20, len(i)).tolist() for i, _ in split]
    t0 = time.perf_counter()
    ours = [score_positions(i, q, d) for (i, d), q in zip(split, preds)]
    score_s = time.perf_counter() - t0
    m = min(args.peer_n, len(split))
    t0 = time.perf_counter()
    peer = [string_procedure(i, q, d) for (i, d), q in zip(split[:m], preds[:m])]
    peer_s = time.perf_counter() - t0
    assert all(sum(ok for *_, ok in r) == c and len(r) == t for r, (c, t) in zip(ours, peer))
    t0 = time.perf_counter()
    for i, _ in split[:m]:
        ngram_predictions(i, 3)
    tri_s = time.perf_counter() - t0
    tokens = sum(len(i) for i, _ in split)
    per_k = lambda s, n: 1000 * s / n
    print(f"instances {len(split)} ({'paper' if args.paper else 'scaled'} lengths), {tokens / len(split):.0f} tokens each")
    print(f"generate          {per_k(gen_s, len(split)):.3f} s / 1000 instances")
    print(f"score (ours)      {per_k(score_s, len(split)):.4f} s / 1000 instances")
    print(f"score (string ref){per_k(peer_s, m):.4f} s / 1000 instances  -> ours is {per_k(peer_s, m) / per_k(score_s, len(split)):.1f}x faster")
    print(f"trigram baseline  {per_k(tri_s, m):.3f} s / 1000 instances")


if __name__ == "__main__":
    main()
