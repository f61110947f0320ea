"""What a sweep plans and reports: one (method, task, seed) run, the sweep's outcome, and
whether a run's comparable result already exists. Shared by :mod:`cl_bench.sweep` (which plans
and hands runs to an executor) and :mod:`cl_bench.executors` (which runs them), so neither
imports the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cl_bench.errors import ClBenchError
from cl_bench.specs import MethodSpec, TaskSpec
from cl_bench.store import read_result, result_path


@dataclass(frozen=True)
class PlannedRun:
    method: MethodSpec
    task: TaskSpec
    seed: int

    @property
    def label(self) -> str:
        return f"{self.method.id} × {self.task.id} × seed {self.seed}"


@dataclass
class SweepReport:
    done: list[tuple[PlannedRun, float, float]] = field(default_factory=list)  # run, primary, seconds
    skipped: list[PlannedRun] = field(default_factory=list)
    failed: list[tuple[PlannedRun, str]] = field(default_factory=list)


def existing_comparable(results_dir: Path, planned: PlannedRun) -> bool:
    path = result_path(results_dir, planned.method.id, planned.task.id, planned.seed)
    if not path.exists():
        return False
    try:
        rec = read_result(path)
    except ClBenchError:
        return False
    return (
        rec.task_spec_hash == planned.task.spec_hash()
        and rec.method_spec_hash == planned.method.spec_hash()
        and rec.seed == planned.seed
        and rec.checkpoint is None
        and rec.budget is None  # a --smoke / --limit result is redone by a full sweep
    )
