"""Scattering transform time: cl_bench's torch implementation vs kymatio (the peer), CPU.

    python benchmarks/scattering.py [--threads 1] [--repeat 3] [--append]

Inputs: CIFAR-sized batches (256 x 3 x 32 x 32) and digits-sized ones (1024 x 1 x 8 x 8), J = 2,
L = 8, order 2. Best of ``--repeat`` forward passes without gradients. Also prints the largest
absolute difference between the two outputs. ``--append`` adds the table to
benchmarks/RESULTS.md (section "scattering").
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from pathlib import Path

import torch

from cl_bench.models.image.scattering import Scattering2D


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D

    rows = []
    for shape in ((256, 3, 32, 32), (1024, 1, 8, 8)):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
        ours, peer = Scattering2D(2, 8, shape[2:]), ScatteringTorch2D(J=2, shape=shape[2:], L=8)
        with torch.no_grad():
            diff = (ours(x) - peer(x).reshape(len(x), -1, *ours(x).shape[-2:])).abs().max().item()
            t_ours = best_time(lambda m=ours, x=x: m(x), args.repeat)
            t_peer = best_time(lambda m=peer, x=x: m(x), args.repeat)
        rows.append((shape, t_ours, t_peer, diff))
    lines = [
        f"## scattering ({date.today()}, {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), best of {args.repeat})",
        "",
        "`python benchmarks/scattering.py --threads 1 --append` — J = 2, L = 8, order 2, forward only",
        "",
        "| input | cl_bench | kymatio 0.3.0 | ratio (ours / kymatio) | max abs diff |",
        "| --- | --- | --- | --- | --- |",
    ]
    for shape, t_ours, t_peer, diff in rows:
        lines.append(
            f"| {'x'.join(map(str, shape))} | {t_ours:.3f} s | {t_peer:.3f} s | {t_ours / t_peer:.2f} | {diff:.1e} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        path = Path(__file__).with_name("RESULTS.md")
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
