"""``clbench sweep``: the cross product of methods × tasks × seeds through an executor.

Resumable: a run whose comparable result already exists (same task spec hash, method spec
hash and seed, and no --checkpoint override) is skipped. A failing run is reported at the
end and does not stop the others.

Safe to interrupt and to run twice at once into one results directory: each run is claimed
with a lock file under ``<results>/.locks/`` (released by the OS when a process dies, even
on SIGKILL), results are written atomically, and a claimed run's leftover temp files from a
killed writer are removed before it runs. A run claimed by another sweep is waited for and
only done here if that sweep did not finish it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from cl_bench.atomic import ensure_writable_dir
from cl_bench.engine import RunOptions, check_compatible
from cl_bench.errors import ClBenchError
from cl_bench.executors import make_executor
from cl_bench.plan import PlannedRun, SweepReport, existing_comparable
from cl_bench.registry import Registry
from cl_bench.store import iter_results

EXECUTORS = ("local", "ray")


def plan(registry: Registry, methods: list[str], tasks: list[str], seeds: list[int]) -> list[PlannedRun]:
    """All (method, task, seed) runs; incompatible pairs are an error up front.

    ``tasks`` may contain ``suite:NAME`` entries (see ``cl_bench.suites``).
    """
    from cl_bench.suites import expand_tasks

    if not methods or not tasks:
        raise ClBenchError("a sweep needs at least one method (--methods) and one task (--tasks)")
    mspecs = [registry.method(m) for m in dict.fromkeys(methods)]
    tspecs = [registry.task(t) for t in expand_tasks(registry, tasks)]
    runs = []
    for m in mspecs:
        for t in tspecs:
            check_compatible(t, m)
            runs.extend(PlannedRun(m.for_task(t.id), t, s) for s in seeds)
    return runs


def run_sweep(
    runs: list[PlannedRun],
    opts: RunOptions,
    progress: bool = False,
    executor: str = "local",
    address: str | None = None,
    jobs: int = 1,
) -> SweepReport:
    """Skip what is done, then hand the rest to the executor (``local`` or ``ray``)."""
    runner = make_executor(executor, address, jobs)
    ensure_writable_dir(opts.results_dir, "results directory (--results-dir)")
    report = SweepReport()
    todo = []
    for r in runs:
        (report.skipped if existing_comparable(opts.results_dir, r) else todo).append(r)
    if todo:
        runner.execute(todo, opts, report, progress)
    return report


# --------------------------------------------------------------------------- dry run

@dataclass
class DryRunRow:
    run: PlannedRun
    action: str  # "run" | "skip"
    estimate_s: float | None  # from earlier records of the same (method, task), else the task
    basis: str  # where the estimate comes from


def earlier_durations(results_dir: Path) -> tuple[dict[tuple[str, str], list[float]], dict[str, list[float]]]:
    """Wall times of earlier records, by (method, task) and by task (unreadable files ignored)."""
    by_pair: dict[tuple[str, str], list[float]] = defaultdict(list)
    by_task: dict[str, list[float]] = defaultdict(list)
    try:
        for _, rec in iter_results(results_dir):
            by_pair[(rec.method, rec.task)].append(rec.timings.total_s)
            by_task[rec.task].append(rec.timings.total_s)
    except ClBenchError:
        pass
    return by_pair, by_task


def dry_run(runs: list[PlannedRun], results_dir: Path) -> list[DryRunRow]:
    """What a sweep would do and skip, with an estimated time per run to do."""
    by_pair, by_task = earlier_durations(results_dir)
    rows = []
    for r in runs:
        if existing_comparable(results_dir, r):
            rows.append(DryRunRow(r, "skip", None, "comparable result exists"))
            continue
        pair = by_pair.get((r.method.id, r.task.id))
        if pair:
            rows.append(DryRunRow(r, "run", statistics.median(pair), f"median of {len(pair)} earlier run(s)"))
        elif by_task.get(r.task.id):
            times = by_task[r.task.id]
            rows.append(DryRunRow(r, "run", statistics.median(times),
                                  f"median of {len(times)} earlier run(s) of the task, other methods"))
        else:
            rows.append(DryRunRow(r, "run", None, "no earlier record of this task"))
    return rows


def render_dry_run(rows: list[DryRunRow]) -> str:
    lines = []
    for row in rows:
        est = "" if row.estimate_s is None else f"~{row.estimate_s:.1f}s"
        lines.append(f"{row.action:5s} {row.run.label:60s} {est:>9s}  ({row.basis})")
    to_run = [r for r in rows if r.action == "run"]
    known = [r.estimate_s for r in to_run if r.estimate_s is not None]
    total = f"~{sum(known):.0f}s estimated" + (
        f" for {len(known)} of them" if len(known) < len(to_run) else "")
    lines.append(f"would run {len(to_run)}, skip {len(rows) - len(to_run)}; {total} (sequential, local)")
    return "\n".join(lines) + "\n"
