"""``clbench table``: methods × tasks, mean ± std over seeds, from comparable results only."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from cl_bench.specs import ResultRecord, RunBudget, TaskSpec
from cl_bench.store import iter_results


@dataclass
class Cell:
    method: str
    task: str
    metric: str
    mean: float
    std: float  # sample std (ddof=1); nan with one seed
    n: int
    seeds: list[int]


@dataclass
class Stale:
    """A result left out of the cells: measured under another task or method spec (``stale``) or at a reduced
    budget (``budget``: ``--smoke`` / ``--limit``)."""

    path: str
    method: str
    task: str
    reason: str
    kind: str = "stale"  # stale | budget


@dataclass
class Summary:
    cells: list[Cell] = field(default_factory=list)
    stale: list[Stale] = field(default_factory=list)
    # the comparable records behind the cells, per (method, task), sorted by seed
    records: dict[tuple[str, str], list[ResultRecord]] = field(default_factory=dict, repr=False)

    def methods(self) -> list[str]:
        return sorted({c.method for c in self.cells})

    def tasks(self) -> list[str]:
        return sorted({c.task for c in self.cells})

    def cell(self, method: str, task: str) -> Cell | None:
        return next((c for c in self.cells if c.method == method and c.task == task), None)

    def cells_for(self, metric: str | None, specs: dict[str, TaskSpec]) -> list[Cell]:
        """Mean ± std per (method, task) of ``metric`` (default: each task's primary metric) over the
        seeds that define it (a metric undefined on the data, stored as null, makes no cell)."""
        cells = (cell_of(m, t, metric or specs[t].primary_metric, recs) for (m, t), recs in sorted(self.records.items()))
        return [c for c in cells if c is not None]


def cell_of(method: str, task: str, metric: str, records: list[ResultRecord]) -> Cell | None:
    """Mean ± sample std of ``metric`` over the records that define it; None when none does."""
    have = [r for r in records if r.metrics.get(metric) is not None]
    if not have:
        return None
    values = np.array([r.metrics[metric] for r in have], dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return Cell(method, task, metric, float(values.mean()), std, len(values), [r.seed for r in have])


def collect(results_dir: Path, registry: Registry, tasks: list[str] | None = None,
            methods: list[str] | None = None) -> tuple[Summary, dict[str, TaskSpec]]:
    """One pass over the results: comparable records grouped by (method, task), the rest listed as
    stale; and the current spec of every task seen. Each spec is read and hashed once, so the
    cost is linear in the number of results."""
    known_tasks, known_methods = set(registry.task_ids()), set(registry.method_ids())
    method_hashes: dict[tuple[str, str], str] = {}

    def method_hash(method_id: str, task_id: str) -> str:  # a result made by another recipe/arch than today's is stale
        if (method_id, task_id) not in method_hashes:
            method_hashes[method_id, task_id] = registry.method(method_id).for_task(task_id).spec_hash()
        return method_hashes[method_id, task_id]

    specs: dict[str, TaskSpec] = {}
    hashes: dict[str, str] = {}
    summary = Summary()
    for path, rec in iter_results(results_dir):
        if (tasks and rec.task not in tasks) or (methods and rec.method not in methods):
            continue
        if rec.task not in known_tasks:
            summary.stale.append(Stale(str(path), rec.method, rec.task, "task no longer in the registry"))
            continue
        if rec.task not in specs:
            specs[rec.task] = registry.task(rec.task)
            hashes[rec.task] = specs[rec.task].spec_hash()
        spec = specs[rec.task]
        if rec.budget is not None:  # --smoke / --limit: never averaged with (or compared to) full runs
            summary.stale.append(Stale(str(path), rec.method, rec.task, budget_reason(rec.budget), "budget"))
            continue
        if rec.task_spec_hash != hashes[rec.task]:
            summary.stale.append(Stale(
                str(path), rec.method, rec.task,
                f"measured under task v{rec.task_version} spec {rec.task_spec_hash[:10]}, "
                f"current is v{spec.version} spec {hashes[rec.task][:10]}",
            ))
            continue
        if rec.method in known_methods and rec.method_spec_hash != method_hash(rec.method, rec.task):
            summary.stale.append(Stale(
                str(path), rec.method, rec.task,
                f"measured under method spec {rec.method_spec_hash[:10]}, current is {method_hash(rec.method, rec.task)[:10]}",
            ))
            continue
        # another precision than the tasks' fp32 is its own row, "method [bf16]": never averaged in
        label = rec.method if rec.precision == "fp32" else f"{rec.method} [{rec.precision}]"
        summary.records.setdefault((label, rec.task), []).append(rec)
    for recs in summary.records.values():
        recs.sort(key=lambda r: r.seed)
    return summary, specs


def budget_reason(budget: RunBudget) -> str:
    """'smoke budget (--smoke): first 8 of 4952 test images; 2 of 24000 iterations'."""
    kind = "smoke budget (--smoke)" if budget.smoke else f"item limit (--limit {budget.limit})"
    return f"{kind}: {'; '.join(budget.applied.values())}" if budget.applied else kind


def summarize(
    results_dir: Path,
    registry: Registry,
    tasks: list[str] | None = None,
    methods: list[str] | None = None,
    metric: str | None = None,
) -> Summary:
    """Group comparable results by (method, task); everything else is listed as stale."""
    summary, specs = collect(results_dir, registry, tasks, methods)
    summary.cells = summary.cells_for(metric, specs)
    return summary


def _fmt(c: Cell | None, digits: int = 2) -> str:
    if c is None:
        return "—"
    if math.isnan(c.std):
        return f"{c.mean:.{digits}f} (n={c.n})"
    return f"{c.mean:.{digits}f} ± {c.std:.{digits}f} (n={c.n})"


def render(summary: Summary, fmt: str = "markdown") -> str:
    methods, tasks = summary.methods(), summary.tasks()
    if fmt == "json":
        return _json(summary)
    if fmt == "csv":
        lines = ["method,task,metric,mean,std,n,seeds"]
        for c in summary.cells:
            std = "" if math.isnan(c.std) else f"{c.std:.6g}"
            lines.append(f"{c.method},{c.task},{c.metric},{c.mean:.6g},{std},{c.n},{' '.join(map(str, c.seeds))}")
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        esc = lambda s: s.replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")  # noqa: E731
        out = [r"\begin{tabular}{l" + "c" * len(tasks) + "}", r"\toprule",
               "method & " + " & ".join(esc(t) for t in tasks) + r" \\", r"\midrule"]
        for m in methods:
            cells = []
            for t in tasks:
                c = summary.cell(m, t)
                cells.append("--" if c is None else (f"{c.mean:.2f}" if math.isnan(c.std) else f"{c.mean:.2f} $\\pm$ {c.std:.2f}"))
            out.append(esc(m) + " & " + " & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(out) + "\n"
    if fmt != "markdown":
        raise ClBenchError(f"unknown table format '{fmt}'; use markdown, csv, latex or json")
    metric_names = {t: next(c.metric for c in summary.cells if c.task == t) for t in tasks}
    head = "| method | " + " | ".join(f"{t} ({metric_names[t]})" for t in tasks) + " |"
    out = [head, "|" + "---|" * (len(tasks) + 1)]
    for m in methods:
        out.append(f"| {m} | " + " | ".join(_fmt(summary.cell(m, t)) for t in tasks) + " |")
    if not methods:
        out = ["(no comparable results)"]
    if any(m.endswith("]") for m in methods):
        out += ["", "[bf16] / [fp16]: features extracted at that precision (--precision); tasks are fp32, kept apart"]
    stale = [s for s in summary.stale if s.kind == "stale"]
    reduced = [s for s in summary.stale if s.kind == "budget"]
    if stale:
        out += ["", f"{len(stale)} stale result(s), not included:"]
        out += [f"- {s.method} / {s.task}: {s.reason} ({s.path})" for s in stale]
    if reduced:
        out += ["", f"{len(reduced)} reduced-budget result(s) (--smoke / --limit), never compared:"]
        out += [f"- {s.method} / {s.task}: {s.reason} ({s.path})" for s in reduced]
    return "\n".join(out) + "\n"


def _json(summary: Summary) -> str:
    def clean(c: Cell) -> dict:
        d = asdict(c)
        d["std"] = None if math.isnan(c.std) else c.std
        return d

    return json.dumps({"cells": [clean(c) for c in summary.cells],
                       "stale": [asdict(s) for s in summary.stale]}, indent=2) + "\n"
