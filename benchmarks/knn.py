"""Our weighted kNN (torch, chunked) vs scikit-learn's KNeighborsClassifier(brute, cosine).

    python benchmarks/knn.py [--quick] [--threads 1,2] [--repeat 2] [--append]

Data: 20,000 train / 5,000 test x 256-d float32, 100 classes, class means ~ N(0, 0.3²) plus
N(0, 1) noise, numpy generator seed 0 (``--quick``: 5,000 / 1,000 x 128-d). Both sides: k = 20,
vote weight exp(cos / 0.07) (sklearn: ``weights=`` a callable of the cosine distance d,
exp((1 - d) / T)). Same thread settings for both (``torch.set_num_threads`` and threadpoolctl),
best of ``--repeat``. Reported: top-1 of each, the number of test items whose predicted class
differs, and sklearn time / our time.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from cl_bench.protocols.knn import knn_predict

K, T = 20, 0.07


def synthetic(n_train: int, n_test: int, dim: int, classes: int, spread: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, spread, (classes, dim)).astype(np.float32)
    ytr, yte = rng.integers(0, classes, n_train), rng.integers(0, classes, n_test)
    xtr = means[ytr] + rng.standard_normal((n_train, dim), dtype=np.float32)
    xte = means[yte] + rng.standard_normal((n_test, dim), dtype=np.float32)
    return xtr, ytr, xte, yte


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def exp_weights(dist: np.ndarray) -> np.ndarray:
    return np.exp((1.0 - dist) / T)


def row(data: tuple, threads: int, repeat: int) -> dict[str, Any]:
    xtr, ytr, xte, yte = data
    C = int(ytr.max()) + 1
    t_ours, scores = best_of(lambda: knn_predict(xtr, ytr, xte, K, T, C), repeat)
    ours = scores.argmax(1).numpy()

    def sk() -> np.ndarray:
        clf = KNeighborsClassifier(n_neighbors=K, algorithm="brute", metric="cosine", weights=exp_weights)
        return clf.fit(xtr, ytr).predict(xte)

    t_sk, pred = best_of(sk, repeat)
    return {"threads": threads, "acc_ours": float((ours == yte).mean() * 100), "acc_sk": float((pred == yte).mean() * 100),
                "differ": int((ours != pred).sum()), "t_ours": t_ours, "t_sk": t_sk}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--append", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()
    shape = (5_000, 1_000, 128, 100) if args.quick else (20_000, 5_000, 256, 100)
    data = synthetic(*shape)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            rows.append(row(data, threads, args.repeat))
            print(fmt(rows[-1]), flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    quick = " --quick" if args.quick else ""
    report = "\n".join([
        f"\n## knn ({time.strftime('%Y-%m-%d')})\n",
        f"`python benchmarks/knn.py{quick} --threads {args.threads} --repeat {args.repeat}`\n",
        (f"{platform.machine()}, {os.cpu_count()} CPUs (load average {load:.1f} at the end), python "
        f"{platform.python_version()}, torch {torch.__version__}, sklearn {__import__('sklearn').__version__}; "
        f"{shape[0]:,} train x {shape[1]:,} test x {shape[2]}-d, {shape[3]} classes, k={K}, T={T}; "
        f"best of {args.repeat}.\n"),
        "| threads | top-1 ours | top-1 sklearn | predictions that differ | ours s | sklearn s | speed-up |",
        "|---|---|---|---|---|---|---|",
        *map(fmt, rows),
    ]) + "\n"
    print(report)
    if args.append:
        path = Path(__file__).with_name("RESULTS.md")
        head = "" if path.exists() else "# Benchmark results\n"
        with path.open("a") as f:
            f.write(head + report)


def fmt(r: dict[str, Any]) -> str:
    return (f"| {r['threads']} | {r['acc_ours']:.2f} | {r['acc_sk']:.2f} | {r['differ']} | {r['t_ours']:.2f} | "
            f"{r['t_sk']:.2f} | {r['t_sk'] / r['t_ours']:.2f}x |")


if __name__ == "__main__":
    main()
