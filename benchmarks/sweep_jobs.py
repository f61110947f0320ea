"""The CI gate's sweep with ``--jobs 1`` (one run after another) and ``--jobs N`` (parallel processes).

    python benchmarks/sweep_jobs.py [--jobs 2] [--methods raw-pixels,random,supervised,simclr,dcl] [--seeds 3] [--record]

Both sides run the gate's command of ``.ci/run`` (``clbench sweep --methods M --tasks
suite:embedded-fast --seeds 3``) through the real CLI in a subprocess, each with its own cold
cache and results directory, one after the other in the same invocation, at 1 torch thread per
process. The peer is ``--jobs 1``, today's local executor; reported: wall times, their ratio,
and whether both produced the same metrics for every run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.record import append_section, machine_line  # noqa: E402


def gate(jobs: int, methods: str, work: Path, seeds: int = 3) -> tuple[float, dict]:
    results, cache = work / f"results-{jobs}", work / f"cache-{jobs}"
    cmd = [sys.executable, "-m", "cl_bench.cli", "sweep", "--jobs", str(jobs), "--methods", methods,
           "--tasks", "suite:embedded-fast", "--seeds", str(seeds), "--results-dir", str(results), "--cache-dir", str(cache),
           "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CI": "1"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    metrics = {str(p.relative_to(results)): json.loads(p.read_text())["metrics"]
               for p in sorted(results.rglob("seed*.json"))}
    return wall, metrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--methods", default="raw-pixels,random,supervised,simclr,dcl")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t1, m1 = gate(1, a.methods, Path(tmp), a.seeds)
        tn, mn = gate(a.jobs, a.methods, Path(tmp), a.seeds)
    same = m1 == mn
    rows = [f"| --jobs 1 (peer: one after another) | {t1:.1f} | 1.00x |",
            f"| --jobs {a.jobs} | {tn:.1f} | {t1 / tn:.2f}x |"]
    text = "\n".join([
        f"`python benchmarks/sweep_jobs.py --jobs {a.jobs} --methods {a.methods} --seeds {a.seeds}` — the CI gate's sweep "
        f"({len(m1)} runs, cold caches, 1 thread per process). {machine_line()}", "",
        "| executor | wall s | speed-up |", "|---|---|---|", *rows, "",
        f"Same metrics in every run: {'yes' if same else 'NO'}.",
    ])
    print(text)
    if a.record:
        append_section(f"## sweep --jobs ({dt.date.today()}; issue #16, cheap win 4)", text)


if __name__ == "__main__":
    main()
