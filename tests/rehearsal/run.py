"""Run the rehearsal: build the trees and checkpoints, then ``clbench run --smoke`` for every case,
as a user types it; check each result and print one table (task, method, smoke metric, wall / CPU s).

    python -m tests.rehearsal.run [--device cpu|cuda] [--work DIR] [--tasks T1,T2] [--out table.md]

``tests/rehearsal/test_rehearsal.py`` runs the same cases under pytest; ``benchmarks/gpu_rehearsal.sh``
runs this with ``--device cuda``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cl_bench.specs import ResultRecord, load_result
from tests.rehearsal.cases import CASES, Case
from tests.rehearsal.checkpoints import arch_args, fabricate_all
from tests.rehearsal.trees import build_data_root, build_truthfulqa_parquet_root


@dataclass
class Setup:
    work: Path
    roots: dict[str, Path]
    checkpoints: dict[str, Path]
    setup_s: float
    setup_cpu_s: float = 0.0


@dataclass
class Row:
    case: Case
    record: ResultRecord
    wall_s: float
    cpu_s: float  # this process and its finished children (loader workers): the work done, whatever the load


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def prepare(work: Path) -> Setup:
    t0, c0 = time.perf_counter(), cpu_seconds()
    roots = {"data": build_data_root(work / "data"), "tqa-parquet": build_truthfulqa_parquet_root(work / "tqa")}
    return Setup(work, roots, fabricate_all(work / "checkpoints"), time.perf_counter() - t0,
                 cpu_seconds() - c0)


def command(case: Case, setup: Setup, device: str) -> list[str]:
    """The ``clbench`` arguments a user would type for ``case``."""
    return ["run", "--method", case.method, "--task", case.task, "--smoke", "--device", device,
            "--checkpoint", str(setup.checkpoints[case.checkpoint]), *arch_args(case.arch_params),
            "--data-root", str(setup.roots[case.root]), "--results-dir", str(setup.work / "results"),
            "--cache-dir", str(setup.work / "cache")] + (["--limit", str(case.limit)] if case.limit else [])


def run_case(case: Case, setup: Setup, device: str = "cpu") -> Row:
    """One ``clbench run --smoke``; its result, checked: smoke budget recorded, the checkpoint loaded,
    and the case's own provenance facts."""
    from cl_bench.cli import main

    argv = command(case, setup, device)
    err = io.StringIO()
    cache_env = os.environ.get("CLBENCH_CACHE")
    t0, c0 = time.perf_counter(), cpu_seconds()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    finally:  # the CLI exports --cache-dir for components that obtain models themselves
        if cache_env is None:
            os.environ.pop("CLBENCH_CACHE", None)
        else:
            os.environ["CLBENCH_CACHE"] = cache_env
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    if rc != 0:
        raise AssertionError(f"clbench {' '.join(argv)} exited {rc}: {err.getvalue().strip()[-2000:]}")
    record = load_result(setup.work / "results" / case.method / case.task / "seed0.json")
    assert record.budget is not None and record.budget.smoke and record.budget.limit == (case.limit or 8), record.budget
    assert record.model_source == "checkpoint" and record.checkpoint is not None
    assert record.device.startswith(device.split(":")[0]) or device == "auto", record.device
    if case.check is not None:
        case.check(record)
    return Row(case, record, wall, cpu)


def table(rows: list[Row], setup: Setup, device: str) -> str:
    lines = ["| task | method (checkpoint) | smoke metric | wall s | CPU s |", "|---|---|---|---|---|"]
    for r in rows:
        rec = r.record
        lines.append(f"| {rec.task} | {r.case.method} ({r.case.checkpoint}) | {rec.primary_metric} = "
                     f"{rec.primary:.2f} | {r.wall_s:.1f} | {r.cpu_s:.1f} |")
    wall, cpu = sum(r.wall_s for r in rows) + setup.setup_s, sum(r.cpu_s for r in rows) + setup.setup_cpu_s
    lines.append(f"| **total** ({len(rows)} tasks, device {device}) | trees + checkpoints {setup.setup_s:.1f} s "
                 f"(CPU {setup.setup_cpu_s:.1f} s) | | **{wall:.1f}** | **{cpu:.1f}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--work", default=None, help="working folder (default: a fresh temporary one)")
    ap.add_argument("--tasks", default=None, help="comma-separated task ids (default: every case)")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="clbench-rehearsal-"))
    cases = [c for c in CASES if not args.tasks or c.task in args.tasks.split(",")]
    setup = prepare(work)
    rows, failed = [], []
    for case in cases:
        try:
            rows.append(run_case(case, setup, args.device))
            print(f"ok      {case.task} ({rows[-1].wall_s:.1f}s)", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - report every case, then fail
            failed.append(case.task)
            print(f"FAILED  {case.task}: {e}", file=sys.stderr)
    text = table(rows, setup, args.device)
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    if failed:
        print(f"{len(failed)} case(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
