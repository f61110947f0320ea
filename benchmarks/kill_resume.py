"""kill -9 during feature extraction, then resume: identical bytes, at most one chunk redone.

    python benchmarks/kill_resume.py [--rows 400000] [--dim 2048] [--at 0.6]

A child process extracts ``rows`` × ``dim`` float32 features (the synthetic set of
``feature_memory.py``) into a cache entry through the engine's path (chunks of 8,192 rows),
printing how many rows it has handed to the entry after every batch. When it passes ``at`` of
the rows it gets SIGKILL. A second child resumes the same entry. The peer is an uninterrupted
extraction into another cache in the same invocation: the two ``data.bin`` files are compared
byte for byte, and the rows redone (last rows reported before the kill − where the resume
started) are reported against the chunk size.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = """
import sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from benchmarks.feature_memory import Synthetic, model
from cl_bench.cache import Cache
from cl_bench.extract import extract_entry
from cl_bench.feature_store import EntryWriter
from cl_bench.feed import Feeder

split, m, cpu = Synthetic({rows}), model({dim}), torch.device("cpu")
write, resume = EntryWriter.write, EntryWriter._resume
def reporting(self, batch):
    write(self, batch)
    print("rows", self.start + self._filled, flush=True)
def resuming(self):
    resume(self)
    print("start", self.start, self.chunk_rows, flush=True)
EntryWriter.write, EntryWriter._resume = reporting, resuming

entry, _ = Cache({cache!r}).stored_features(
    "k" * 64, lambda folder: extract_entry(folder, m, split, cpu, Feeder(0, cpu)))
print("done", entry.path, flush=True)
"""


def child(cache: Path, rows: int, dim: int) -> subprocess.Popen:
    code = CHILD.format(root=str(ROOT), rows=rows, dim=dim, cache=str(cache))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--at", type=float, default=0.6)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        t0 = time.perf_counter()
        ref = child(Path(tmp) / "ref", a.rows, a.dim)
        out, _ = ref.communicate()
        t_full = time.perf_counter() - t0
        ref_path = Path(out.strip().splitlines()[-1].split()[1])

        t0 = time.perf_counter()
        proc = child(Path(tmp) / "killed", a.rows, a.dim)
        last, chunk = 0, 0
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("start"):
                chunk = int(line.split()[2])
            if line.startswith("rows"):
                last = int(line.split()[1])
                if last >= a.at * a.rows:
                    proc.send_signal(signal.SIGKILL)
                    break
        proc.wait()
        t_killed = time.perf_counter() - t0
        t0 = time.perf_counter()
        resumed = child(Path(tmp) / "killed", a.rows, a.dim)
        out, _ = resumed.communicate()
        t_resume = time.perf_counter() - t0
        start = int(next(x for x in out.splitlines() if x.startswith("start")).split()[1])
        path = Path(out.strip().splitlines()[-1].split()[1])
        same = sha(path) == sha(ref_path)
    print(f"`python benchmarks/kill_resume.py --rows {a.rows} --dim {a.dim} --at {a.at}` — float32, "
          f"{a.rows * a.dim * 4 / 2**30:.2f} GiB entry, chunks of {chunk:,} rows.\n")
    print("| uninterrupted s | killed after s (rows handed over) | resumed at row | rows redone | resume s | bit-identical |")
    print("|---|---|---|---|---|---|")
    print(f"| {t_full:.1f} | {t_killed:.1f} ({last:,}) | {start:,} | {last - start:,} (chunk = {chunk:,}) | "
          f"{t_resume:.1f} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
