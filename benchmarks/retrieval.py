"""Recall@K retrieval: our blocked exact ranks vs the naive full similarity matrix + torch.topk.

    python benchmarks/retrieval.py [--naive-sizes 10000,20000,40000] [--ours-sizes 100000]
                                   [--dim 256] [--block 1024] [--append]

Data (same on both sides, torch generator seed 0): N image embeddings ~ N(0, I_D) normalised;
N caption embeddings = the embedding of a random permutation's image + N(0, 0.2²) noise,
normalised (one caption per image, captions NOT grouped by image). Both sides compute
text→image and image→text R@1/5/10.

- ours: ``cl_bench.protocols.retrieval.retrieval_ranks`` (tiles of block × block, exact ranks).
- naive (as CLIP_benchmark): S = T @ I^T in full (N×N float32), ``S.topk(10, dim=1)`` for
  text→image and ``S.T.topk(10, dim=1)`` for image→text, hits looked up in the top 10.

Each side runs in its own subprocess with ``torch.set_num_threads(1)``; time = the compute
only (data generation excluded), wall and CPU (``process_time``: on a shared machine the
honest one); memory = the process's peak RSS during the compute (``VmHWM`` after resetting it
through ``/proc/self/clear_refs`` once the data exists) and its increase over the RSS then. Recalls of both sides are compared.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

KS = (1, 5, 10)


def status_mb(field: str) -> float:
    """VmRSS (current) or VmHWM (peak since the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak covers only what follows."""
    Path("/proc/self/clear_refs").write_text("5")


def make_data(n: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    owner = torch.randperm(n, generator=g)
    texts = images[owner]
    texts += 0.2 * torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(texts, dim=1), images, owner


def child(side: str, n: int, dim: int, block: int) -> dict:
    torch.set_num_threads(1)
    texts, images, owner = make_data(n, dim)
    gc.collect()
    reset_peak()
    base = status_mb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    if side == "ours":
        from cl_bench.protocols.retrieval import recalls, retrieval_ranks

        t2i, i2t = retrieval_ranks(texts, images, owner.numpy(), block)
        rec = recalls(t2i, i2t, list(KS))
    else:
        S = texts @ images.T
        top_t = S.topk(max(KS), dim=1).indices  # [N_t, 10] image indices
        top_i = S.T.topk(max(KS), dim=1).indices  # [N_i, 10] caption indices
        rec = {}
        for k in KS:
            rec[f"t2i_r{k}"] = 100 * (top_t[:, :k] == owner[:, None]).any(1).double().mean().item()
            rec[f"i2t_r{k}"] = 100 * (owner[top_i[:, :k]] == torch.arange(n)[:, None]).any(1).double().mean().item()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"side": side, "n": n, "time_s": elapsed, "cpu_s": cpu, "peak_rss_mb": status_mb("VmHWM"),
            "base_rss_mb": base,
            "recalls": {k: rec[k] for k in sorted(rec) if k.startswith(("t2i", "i2t"))}}


def run_side(side: str, n: int, dim: int, block: int) -> dict:
    cmd = [sys.executable, __file__, "--child", side, "--n", str(n), "--dim", str(dim), "--block", str(block)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        return {"side": side, "n": n, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(r: dict | None) -> str:
    if r is None:
        return "not run | | | "
    if "error" in r:
        return f"failed ({r['error'][:60]}) | | | "
    return f"{r['time_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['base_rss_mb']:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--naive-sizes", default="10000,20000,40000")
    ap.add_argument("--ours-sizes", default="100000")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--append", action="store_true")
    ap.add_argument("--child", choices=["ours", "naive"])
    ap.add_argument("--n", type=int)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.n, a.dim, a.block)))
        return
    naive_sizes = [int(s) for s in a.naive_sizes.split(",") if s]
    ours_sizes = sorted(set(naive_sizes) | {int(s) for s in a.ours_sizes.split(",") if s})
    lines = [
        ("| N images = N captions | ours wall s | ours CPU s | ours peak RSS MB | ours +MB | naive wall s "
         "| naive CPU s | naive peak RSS MB | naive +MB | naive/ours CPU time | recalls equal |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in ours_sizes:
        ours = run_side("ours", n, a.dim, a.block)
        naive = run_side("naive", n, a.dim, a.block) if n in naive_sizes else None
        ratio = equal = "–"
        if naive and "error" not in naive and "error" not in ours:
            ratio = f"{naive['cpu_s'] / ours['cpu_s']:.2f}"
            tol = 50.0 / n  # half of one query, in %: recalls are means of 0/1 hits
            equal = "yes" if all(abs(naive["recalls"][k] - ours["recalls"][k]) < tol for k in ours["recalls"]) else "NO"
        lines.append(f"| {n:,} | {fmt(ours)} | {fmt(naive)} | {ratio} | {equal} |")
        print(lines[-1], flush=True)
        if "error" not in ours:
            print("   ours recalls:", {k: round(v, 2) for k, v in ours["recalls"].items()}, flush=True)
    full_gb = 4 * max(ours_sizes) ** 2 / 1e9
    header = (f"## retrieval (benchmarks/retrieval.py; {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
              f"torch {torch.__version__}, 1 thread, D = {a.dim}, block {a.block}; 2 shared cores, load average "
              f"{os.getloadavg()[0]:.1f} from other jobs)")
    fits = "does not fit" if full_gb > 20 else "fits"
    text = "\n".join([header, "", *lines, "",
                      (f"The naive full matrix at N = {max(ours_sizes):,} is {full_gb:.1f} GB of float32 ({fits} "
                       "in this 24 GiB machine); naive runs only where the row has its numbers."), ""])
    print(text)
    if a.append:
        path = Path(__file__).with_name("RESULTS.md")
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
