"""Peak memory of feature extraction and of the linear probe: the chunked data path vs today's.

    python benchmarks/feature_memory.py [--rows 1000000] [--old-rows 50000,100000] [--dim 2048]

Each measurement runs in a fresh subprocess and reports its peak RSS (``ru_maxrss``).

Extraction: ``rows`` items whose inputs are 16-d vectors held in memory (64 MB for 1 M rows;
``tensor()``, sliced in batches of 256) through a fixed random ``Linear(16, dim)``; the class of
item i is ``i % 10`` and its input the class mean plus noise, so the probe has something to learn.
- ours: the engine's path (``extract_entry``: a chunked cache entry), at
  ``--precision fp16`` (float16 on disk; CPU autocast) — the 1 M × 2048 set is 4 GB on disk;
- today (commit 06c5d86): features gathered in a list, ``torch.cat``, then ``np.save`` into a
  buffer written atomically — copied here verbatim as the peer.

Linear probe (10 classes, one λ, ``max_iter`` L-BFGS iterations; peak memory does not depend on
the iteration count): ours reads the cache entry (train: the first 95 % of rows, test: the rest);
at 1 M rows the full batch does not fit the memory budget, so the streamed solver runs.
Today's probe (standardisation in float64, then full-batch L-BFGS) is copied from 06c5d86 and
run at the largest sizes this shared 24 GiB machine can safely hold.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLASSES, IN_DIM = 10, 16


class Synthetic:
    """``rows`` in-memory 16-d inputs (what an image split's ``tensor()`` would give)."""

    def __init__(self, rows: int) -> None:
        rng = np.random.default_rng(0)
        means = rng.standard_normal((CLASSES, IN_DIM)).astype(np.float32)
        self.labels = np.arange(rows) % CLASSES
        self.x = torch.from_numpy(means[self.labels] + 0.8 * rng.standard_normal((rows, IN_DIM), dtype=np.float32))
        self.fingerprint = f"synthetic-{rows}"

    def __len__(self) -> int:
        return len(self.labels)

    def tensor(self) -> torch.Tensor:
        return self.x


def model(dim: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN_DIM, dim), torch.nn.Tanh()).eval()


def extract_ours(rows: int, dim: int, cache: Path) -> dict:
    from cl_bench.cache import Cache
    from cl_bench.extract import extract_entry
    from cl_bench.feed import Feeder

    split, m, cpu = Synthetic(rows), model(dim), torch.device("cpu")
    entry, _ = Cache(cache).stored_features(
        f"{rows}".ljust(64, "f"), lambda folder: extract_entry(folder, m, split, cpu, Feeder(0, cpu), "fp16"))
    return {"folder": str(entry.folder), "disk_bytes": entry.path.stat().st_size}


def extract_today(rows: int, dim: int, cache: Path) -> dict:
    """engine.extract_features + Cache.features of commit 06c5d86 (in-memory list, cat, np.save)."""
    from cl_bench.atomic import write_atomic

    split, m = Synthetic(rows), model(dim)
    out: list[torch.Tensor] = []
    with torch.no_grad():
        images = split.tensor()
        for i in range(0, len(images), 256):
            out.append(m(images[i : i + 256]).float().cpu())
    feats = np.ascontiguousarray(torch.cat(out).numpy(), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, feats, allow_pickle=False)
    write_atomic(cache / "today.npy", buf.getvalue())
    return {"disk_bytes": (cache / "today.npy").stat().st_size}


def probe_ours(folder: str, rows: int, max_iter: int) -> dict:
    from cl_bench.feature_store import open_entry
    from cl_bench.memory_budget import budget_bytes
    from cl_bench.protocols.linear_probe_solver import LinearProbeParams, linear_probe_scores, topk_correct
    from cl_bench.protocols.linear_probe_stream import full_batch_bytes, streamed_probe_scores

    entry = open_entry(Path(folder))
    assert entry is not None
    labels = np.arange(rows) % CLASSES
    n_train = int(rows * 0.95)
    train, test = _Rows(entry, 0, n_train), _Rows(entry, n_train, rows)
    params = LinearProbeParams(l2_grid=[1e-4], max_iter=max_iter)
    need, _ = full_batch_bytes(len(train), len(test), entry.dim, CLASSES)
    if need <= budget_bytes(torch.device("cpu")):
        scores, extras = linear_probe_scores(train.load(), labels[:n_train], test.load(), CLASSES, params, 0)
        extras["solver"] = "L-BFGS, full batch"
    else:
        scores, extras = streamed_probe_scores(train, labels[:n_train], test, CLASSES, params, 0)
    return {"solver": extras["solver"], "top1": float(topk_correct(scores, labels[n_train:], 1).mean() * 100)}


class _Rows:
    """Rows [lo, hi) of a stored entry, with its reading surface (train / test parts of one set)."""

    def __init__(self, entry, lo: int, hi: int) -> None:
        self.entry, self.lo, self.hi = entry, lo, hi
        self.shape = (hi - lo, entry.dim)

    def __len__(self) -> int:
        return self.hi - self.lo

    def blocks(self, rows: int | None = None):
        step = rows or self.entry.block_rows()
        for s in range(self.lo, self.hi, step):
            yield s - self.lo, self.entry.block(s, min(s + step, self.hi))

    def load(self) -> np.ndarray:
        return self.entry.block(self.lo, self.hi)


def probe_today(rows: int, dim: int, max_iter: int) -> dict:
    """linear_probe_scores of commit 06c5d86: float64 standardisation of the whole matrix."""
    from cl_bench.protocols.linear_probe_solver import fit_logistic, topk_correct

    split, m = Synthetic(rows), model(dim)
    with torch.no_grad():
        feats = torch.cat([m(split.x[i : i + 4096]) for i in range(0, rows, 4096)]).numpy()
    del split
    n_train = int(rows * 0.95)
    labels = np.arange(rows) % CLASSES
    train, test = feats[:n_train], feats[n_train:]

    def standardize(train: np.ndarray, test: np.ndarray):
        mean = train.mean(axis=0, dtype=np.float64)
        std = train.std(axis=0, dtype=np.float64)
        std[std < 1e-12 * max(1.0, float(np.abs(mean).max(initial=0.0)))] = 1.0
        out = [((a - mean) / std).astype(np.float32) for a in (train, test)]
        return out[0], out[1]

    xtr, xte = standardize(np.asarray(train), np.asarray(test))
    W, b = fit_logistic(torch.from_numpy(xtr), torch.from_numpy(labels[:n_train]), 1e-4, CLASSES, max_iter)
    scores = torch.addmm(b, torch.from_numpy(xte), W)
    return {"solver": "today: float64 standardisation + full batch",
            "top1": float(topk_correct(scores, labels[n_train:], 1).mean() * 100)}


def write_throughput(gib: float, folder: Path) -> None:
    """GB/s of writing ``gib`` GiB of float32 [n, 2048] rows through EntryWriter (8,192-row chunks,
    pwrite + fdatasync + journal per chunk) vs today's np.save of the same array + write_atomic."""
    from cl_bench.atomic import write_atomic
    from cl_bench.feature_store import CHUNK_ROWS, EntryWriter

    rows = int(gib * 2**30 / (2048 * 4))
    a = np.random.default_rng(0).standard_normal((rows, 2048), dtype=np.float32)
    t0 = time.perf_counter()
    w = EntryWriter(folder / "w", rows, CHUNK_ROWS, None)
    for i in range(0, rows, 256):
        w.write(a[i : i + 256])
    w.finish()
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    write_atomic(folder / "today.npy", buf.getvalue())
    t_today = time.perf_counter() - t0
    print(f"writing {a.nbytes / 2**30:.2f} GiB: chunked entry {a.nbytes / 1e9 / t_ours:.2f} GB/s ({t_ours:.1f} s), "
          f"today's np.save + atomic write {a.nbytes / 1e9 / t_today:.2f} GB/s ({t_today:.1f} s)")


def child(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(args)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


def run_child(spec: list) -> None:
    torch.set_num_threads(1)
    kind, rest = spec[0], spec[1:]
    t0 = time.perf_counter()
    if kind == "extract_ours":
        res = extract_ours(int(rest[0]), int(rest[1]), Path(rest[2]))
    elif kind == "extract_today":
        res = extract_today(int(rest[0]), int(rest[1]), Path(rest[2]))
    elif kind == "probe_ours":
        res = probe_ours(rest[0], int(rest[1]), int(rest[2]))
    else:
        res = probe_today(int(rest[0]), int(rest[1]), int(rest[2]))
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["inner_s"] = time.perf_counter() - t0
    print(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", default=None)
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--old-rows", default="50000,100000")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--max-iter", type=int, default=3)
    ap.add_argument("--dir", default=None, help="scratch folder (needs rows*dim*2 bytes free)")
    ap.add_argument("--write-gib", type=float, default=0.0, help="only measure write throughput")
    a = ap.parse_args()
    if a.child:
        return run_child(json.loads(a.child))
    if a.write_gib:
        with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
            return write_throughput(a.write_gib, Path(tmp))
    print("| stage | path | rows × dim | peak RSS MB | wall s | notes |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        for rows in [int(r) for r in a.old_rows.split(",") if r]:
            r = child(["extract_today", rows, a.dim, tmp])
            print(f"| extraction | today (list + cat + np.save) | {rows:,} × {a.dim} | {r['peak_rss_mb']:.0f} | "
                  f"{r['wall_s']:.1f} | float32, {r['disk_bytes'] / 2**30:.2f} GiB file |", flush=True)
            (Path(tmp) / "today.npy").unlink()
            r = child(["probe_today", rows, a.dim, a.max_iter])
            print(f"| linear probe | {r['solver']} | {rows:,} × {a.dim} | {r['peak_rss_mb']:.0f} | "
                  f"{r['wall_s']:.1f} | top-1 {r['top1']:.2f} |", flush=True)
        for rows in [int(r) for r in a.rows.split(",") if r]:
            r = child(["extract_ours", rows, a.dim, tmp])
            print(f"| extraction | ours (chunked entry, fp16) | {rows:,} × {a.dim} | {r['peak_rss_mb']:.0f} | "
                  f"{r['wall_s']:.1f} | {r['disk_bytes'] / 2**30:.2f} GiB on disk |", flush=True)
            p = child(["probe_ours", r["folder"], rows, a.max_iter])
            print(f"| linear probe | ours: {p['solver']} | {rows:,} × {a.dim} | {p['peak_rss_mb']:.0f} | "
                  f"{p['wall_s']:.1f} | top-1 {p['top1']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
