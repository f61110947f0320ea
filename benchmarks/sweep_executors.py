"""Ray executor overhead: the same 12-run embedded sweep with ``--executor local`` and ``ray``.

    python benchmarks/sweep_executors.py [--methods raw-pixels,random] [--record]

12 runs = 2 methods × {digits-linear, digits-knn} × 3 seeds, each executor in its own fresh
results dir and cache, through the real CLI in a subprocess (so Ray's start-up is included:
the ray run starts and stops a local Ray instance on all CPUs). The peer is the local
executor measured in the same invocation; the ratio ray / local is reported. Untrained
methods keep the runs short so that executor overhead, not training, is what shows; pass
e.g. ``--methods simclr,dcl`` to include (shared) training.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## sweep_executors"


def sweep(executor: str, methods: str, tasks: str, seeds: int, work: Path) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "cl_bench.cli", "sweep", "--methods", methods, "--tasks", tasks,
           "--seeds", str(seeds), "--device", "cpu", "--executor", executor,
           "--results-dir", str(work / "results"), "--cache-dir", str(work / "cache")]
    env = dict(os.environ, CI="1")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{executor} sweep failed:\n{done.stdout}\n{done.stderr}")
    return wall, done.stdout.strip().splitlines()[-1]


def metrics(results: Path) -> dict[str, dict]:
    return {str(p.relative_to(results)): json.loads(p.read_text())["metrics"]
            for p in sorted(results.glob("*/*/seed*.json"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="raw-pixels,random")
    ap.add_argument("--tasks", default="digits-linear,digits-knn")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = ap.parse_args()
    n = len(args.methods.split(",")) * len(args.tasks.split(",")) * args.seeds
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for executor in ("local", "ray"):
            work = Path(tmp) / executor
            work.mkdir()
            rows[executor] = sweep(executor, args.methods, args.tasks, args.seeds, work)
        same = metrics(Path(tmp) / "local" / "results") == metrics(Path(tmp) / "ray" / "results")
    lines = [
        (f"{n} runs ({args.methods} × {args.tasks} × {args.seeds} seeds), {os.cpu_count()} CPUs, "
         f"fresh cache each; wall time of the whole `clbench sweep` process"),
        f"local executor: {rows['local'][0]:7.1f} s   ({rows['local'][1]})",
        f"ray executor:   {rows['ray'][0]:7.1f} s   ({rows['ray'][1]})",
        f"ratio ray / local = {rows['ray'][0] / rows['local'][0]:.2f}; identical metrics: {same}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.record:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        head = (f"{SECTION} ({dt.date.today()}, {platform.machine()}, python {platform.python_version()}, "
                f"load average at end {load:.1f})")
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(f"\n{head}\n\n`python benchmarks/sweep_executors.py --record`\n\n```\n{text}\n```\n")


if __name__ == "__main__":
    main()
