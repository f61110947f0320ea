"""Our linear probe (torch L-BFGS) vs scikit-learn's LogisticRegression(solver="lbfgs").

    python benchmarks/linear_probe.py [--quick] [--threads 1,2] [--repeat 2] [--search] [--append]

Features (standardized with train statistics, float32 for both sides):

- ``digits``: scikit-learn's 1,797 digits, raw 64 pixels, the stratified 70/30 split (seed 0);
- ``synthetic``: 50,000 train / 10,000 test x 512-d, 100 classes: class means ~ N(0, 0.15²),
  items = mean + N(0, 1) noise, numpy generator seed 0 (``--quick``: 10,000 / 2,000 x 256-d).

Fixed λ (the same minimiser: sklearn ``C = 1 / (2 λ n)``), both sides at the same gradient
tolerance (1e-4 = sklearn's default, 1e-6 = our default), ``max_iter`` 1000. ``--search`` adds
the λ search: our protocol (9-point grid 1e-6…1e2, 20% stratified validation part, warm start,
refit) vs ``LogisticRegressionCV`` on the same split and grid (also warm-started, then refit).

Every row runs both sides under the same thread settings (``torch.set_num_threads`` and
threadpoolctl's BLAS/OpenMP limit), best of ``--repeat`` runs. Reported: test top-1 of each,
the difference in points, the objective gap (ours minus sklearn's, our objective evaluated in
float64 at each solution; negative = ours lower) and sklearn time / our time.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from threadpoolctl import threadpool_limits

from cl_bench.data.splits import stratified_split
from cl_bench.protocols.linear_probe_solver import (
    DEFAULT_L2_GRID,
    LinearProbeParams,
    fit_logistic,
    linear_probe_scores,
    sklearn_c,
    standardize,
)

Dataset = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def digits() -> Dataset:
    X, y = load_digits(return_X_y=True)
    tr, te = stratified_split(y, 0.3, 0)
    xtr, xte = standardize(X[tr].astype(np.float32), X[te].astype(np.float32))
    return xtr, y[tr], xte, y[te]


def synthetic(n_train: int, n_test: int, dim: int, classes: int, spread: float = 0.15, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, spread, (classes, dim)).astype(np.float32)
    ytr, yte = rng.integers(0, classes, n_train), rng.integers(0, classes, n_test)
    xtr = means[ytr] + rng.standard_normal((n_train, dim), dtype=np.float32)
    xte = means[yte] + rng.standard_normal((n_test, dim), dtype=np.float32)
    xtr, xte = standardize(xtr, xte)
    return xtr, ytr, xte, yte


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def objective(X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, l2: float) -> float:
    """mean CE + l2 ||W||² in float64 (W [D, C])."""
    z = X.astype(np.float64) @ W + b
    z -= z.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1))
    return float((lse - z[np.arange(len(y)), y]).mean() + l2 * (W**2).sum())


def fixed_l2_row(name: str, data: Dataset, l2: float, tol: float, threads: int, repeat: int) -> dict[str, Any]:
    xtr, ytr, xte, yte = data
    C = int(ytr.max()) + 1
    X = torch.from_numpy(xtr)
    t_ours, (W, b) = best_of(lambda: fit_logistic(X, ytr, l2, C, max_iter=1000, tol=tol), repeat)
    sk = LogisticRegression(C=sklearn_c(l2, len(ytr)), tol=tol, max_iter=1000)
    t_sk, sk = best_of(lambda: sk.fit(xtr, ytr), repeat)
    W, b = W.double().numpy(), b.double().numpy()
    acc_ours = float(((xte @ W + b).argmax(1) == yte).mean() * 100)
    acc_sk = float((sk.predict(xte) == yte).mean() * 100)
    gap = objective(xtr, ytr, W, b, l2) - objective(xtr, ytr, sk.coef_.T.astype(np.float64), sk.intercept_, l2)
    return {"data": name, "threads": threads, "l2": l2, "tol": tol, "acc_ours": acc_ours, "acc_sk": acc_sk,
                "t_ours": t_ours, "t_sk": t_sk, "gap": gap, "sk_iter": int(np.max(sk.n_iter_))}


def search_row(name: str, data: Dataset, threads: int, repeat: int) -> dict[str, Any]:
    xtr, ytr, xte, yte = data
    C = int(ytr.max()) + 1
    params = LinearProbeParams()
    t_ours, (scores, extras) = best_of(lambda: linear_probe_scores(xtr, ytr, xte, C, params, seed=0), repeat)
    fit, val = stratified_split(ytr, params.val_fraction, 0)
    grid = sorted(params.l2_grid, reverse=True)  # strong -> weak, as ours
    cv = LogisticRegressionCV(Cs=[sklearn_c(v, len(fit)) for v in grid], cv=[(fit, val)], scoring="accuracy",
                              tol=params.tol, max_iter=params.max_iter, refit=True)
    t_sk, cv = best_of(lambda: cv.fit(xtr, ytr), repeat)
    sk_l2 = 1.0 / (2.0 * float(cv.C_[0]) * len(fit))
    return {"data": name, "threads": threads, "l2_ours": extras["l2"], "l2_sk": sk_l2,
                "acc_ours": float((scores.argmax(1).numpy() == yte).mean() * 100),
                "acc_sk": float((cv.predict(xte) == yte).mean() * 100), "t_ours": t_ours, "t_sk": t_sk}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller synthetic set, one repeat")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--search", action="store_true", help="also time the λ search on both sides")
    ap.add_argument("--append", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = ap.parse_args()
    repeat = 1 if args.quick else args.repeat
    warnings.filterwarnings("ignore")  # sklearn deprecation / convergence chatter; iterations are reported
    sets = {"digits": digits(), "synthetic": synthetic(10_000, 2_000, 256, 100) if args.quick
            else synthetic(50_000, 10_000, 512, 100)}
    cases = [("digits", 1e-4), ("digits", 1e-2), ("synthetic", 1e-4), ("synthetic", 1e-3)]
    fixed, search = [], []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            fit_logistic(torch.from_numpy(sets["digits"][0]), sets["digits"][1], 1.0, 10)  # warm-up
            for name, l2 in cases:
                for tol in (1e-4, 1e-6):
                    row = fixed_l2_row(name, sets[name], l2, tol, threads, repeat)
                    fixed.append(row)
                    print(fmt_fixed(row), flush=True)
            if args.search:
                for name in ("digits", "synthetic"):
                    row = search_row(name, sets[name], threads, repeat)
                    search.append(row)
                    print(fmt_search(row), flush=True)
    report = render(args, fixed, search, repeat)
    print(report)
    if args.append:
        path = Path(__file__).with_name("RESULTS.md")
        head = "" if path.exists() else "# Benchmark results\n"
        with path.open("a") as f:
            f.write(head + report)


FIXED_HEAD = ("| data | threads | λ | tol | top-1 ours | top-1 sklearn | Δ points | objective gap | sklearn iters "
              "| ours s | sklearn s | speed-up |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
SEARCH_HEAD = ("| data | threads | λ ours | λ sklearn | top-1 ours | top-1 sklearn | Δ points | ours s | sklearn s "
               "| speed-up |\n|---|---|---|---|---|---|---|---|---|---|")


def fmt_fixed(r: dict[str, Any]) -> str:
    return (f"| {r['data']} | {r['threads']} | {r['l2']:g} | {r['tol']:g} | {r['acc_ours']:.2f} | {r['acc_sk']:.2f} | "
            f"{r['acc_ours'] - r['acc_sk']:+.2f} | {r['gap']:+.1e} | {r['sk_iter']} | {r['t_ours']:.2f} | "
            f"{r['t_sk']:.2f} | {r['t_sk'] / r['t_ours']:.2f}x |")


def fmt_search(r: dict[str, Any]) -> str:
    return (f"| {r['data']} | {r['threads']} | {r['l2_ours']:g} | {r['l2_sk']:.2g} | {r['acc_ours']:.2f} | "
            f"{r['acc_sk']:.2f} | {r['acc_ours'] - r['acc_sk']:+.2f} | {r['t_ours']:.2f} | {r['t_sk']:.2f} | "
            f"{r['t_sk'] / r['t_ours']:.2f}x |")


def render(args: argparse.Namespace, fixed: list[dict[str, Any]], search: list[dict[str, Any]], repeat: int) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    flags = " ".join(f for f in ("--quick", "--search") if getattr(args, f[2:]))
    out = [f"\n## linear_probe ({time.strftime('%Y-%m-%d')})\n",
           f"`python benchmarks/linear_probe.py {flags} --threads {args.threads} --repeat {args.repeat}`".replace("  ", " "),
           (f"\n{platform.machine()}, {os.cpu_count()} CPUs (load average {load:.1f} at the end), python "
           f"{platform.python_version()}, torch {torch.__version__}, sklearn "
           f"{__import__('sklearn').__version__}; best of {repeat}; grid for the search: "
           f"{DEFAULT_L2_GRID[0]:g}…{DEFAULT_L2_GRID[-1]:g} ({len(DEFAULT_L2_GRID)} points).\n"),
           "Fixed λ:\n", FIXED_HEAD, *map(fmt_fixed, fixed)]
    if search:
        out += ["\nλ search (ours: protocol defaults; sklearn: LogisticRegressionCV, same split/grid/tol):\n",
                SEARCH_HEAD, *map(fmt_search, search)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
