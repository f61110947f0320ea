"""``clbench regress``: current results against a baseline set, and the checkpoint sanity gate.

Per (method, task, metric) a status: improved / unchanged / regressed / missing / incomparable
(the two sides were measured under different task spec hashes) / suspect (the current result
fails the sanity gate) / new (no baseline). The tolerance of a task is
``max(abs_floor, k_std × baseline seed std)``, read from the task spec's optional
``regression`` block (defaults: 1.0 point, k = 3).

Sanity gate: a result is *suspect* when its primary metric is within noise of chance
(``extras["chance"]`` in percent, or ``100 / extras["num_classes"]``), or when its checkpoint
load report lists missing backbone keys (anything but BN ``num_batches_tracked``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from cl_bench.report.table import Cell, Summary, cell_of, collect
from cl_bench.specs import ResultRecord, TaskSpec
from cl_bench.store import LOCK_DIR, read_result, result_path
from cl_bench.suggest import did_you_mean

DEFAULT_ABS_FLOOR = 1.0
DEFAULT_K_STD = 3.0
CHANCE_FLOOR = 1.0  # points above chance that are still "within noise" at the least
LOWER_IS_BETTER_HINTS = ("mse", "loss", "error", "perplexity", "ece", "distance", "tvd")
FAILING = ("regressed", "suspect")
INCOMPLETE = ("missing", "incomparable")


@dataclass(frozen=True)
class Tolerance:
    abs_floor: float = DEFAULT_ABS_FLOOR
    k_std: float = DEFAULT_K_STD
    lower_is_better: tuple[str, ...] = ()

    def width(self, baseline_std: float) -> float:
        spread = 0.0 if math.isnan(baseline_std) else self.k_std * baseline_std
        return max(self.abs_floor, spread)

    def higher_is_better(self, metric: str) -> bool:
        if metric in self.lower_is_better:
            return False
        return not any(h in metric.lower() for h in LOWER_IS_BETTER_HINTS)


def tolerance_for(spec: TaskSpec) -> Tolerance:
    """The task's ``regression`` block (a mapping or model) if it has one, else the defaults."""
    block: Any = getattr(spec, "regression", None)
    if block is None:
        return Tolerance()
    get = block.get if isinstance(block, dict) else (lambda k, d=None: getattr(block, k, d))
    return Tolerance(
        abs_floor=float(get("abs_floor", DEFAULT_ABS_FLOOR) or DEFAULT_ABS_FLOOR),
        k_std=float(get("k_std", DEFAULT_K_STD) if get("k_std", None) is not None else DEFAULT_K_STD),
        lower_is_better=tuple(get("lower_is_better", ()) or ()),
    )


# --------------------------------------------------------------------------- sanity gate

CLASS_ACCURACY_METRICS = ("top1", "accuracy", "acc")


def chance_level(record: ResultRecord) -> float | None:
    """Chance accuracy in percent, from the protocol's extras, or None when unknown."""
    ex = record.extras or {}
    if isinstance(ex.get("chance"), (int, float)):
        return float(ex["chance"])
    n = ex.get("num_classes")
    if isinstance(n, int) and n > 1 and record.primary_metric in CLASS_ACCURACY_METRICS:
        return 100.0 / n  # a uniform guess among the classes; meaningless for other metrics
    return None


def chance_margin(record: ResultRecord, chance: float) -> float:
    """How far above chance a score must be to count as signal: 3 binomial sds, at least 1 point."""
    ex = record.extras or {}
    n = ex.get("n_test") or ex.get("n_eval")
    margin = CHANCE_FLOOR
    if isinstance(n, int) and n > 0:
        p = chance / 100.0
        margin = max(margin, 300.0 * math.sqrt(p * (1 - p) / n))
    return margin


def missing_backbone_keys(record: ResultRecord) -> list[str]:
    report = record.checkpoint or {}
    missing = list(report.get("missing", []) or []) + list(report.get("missing_keys", []) or [])
    return [k for k in missing if not str(k).endswith("num_batches_tracked")]


def suspect_reasons(record: ResultRecord, higher_is_better: bool = True) -> list[str]:
    """Why ``record`` should not be trusted (empty when it passes the gate)."""
    reasons = []
    chance = chance_level(record)
    if chance is not None and higher_is_better and record.primary_metric in record.metrics:
        margin = chance_margin(record, chance)
        if record.primary <= chance + margin:
            reasons.append(
                f"{record.primary_metric} {record.primary:.2f} is within noise of chance "
                f"({chance:.2f} + {margin:.2f})"
            )
    missing = missing_backbone_keys(record)
    if missing:
        reasons.append(f"checkpoint load left {len(missing)} backbone key(s) missing (e.g. {missing[0]})")
    return reasons


def cell_suspects(results_dir: Path, cell: Cell, tol: Tolerance | None = None,
                  records: list[ResultRecord] | None = None) -> list[str]:
    """Suspect reasons of the records behind a table cell, each prefixed by its seed (``records``:
    those records when the caller already holds them, else they are read from ``results_dir``)."""
    tol = tol or Tolerance()
    out = []
    if records is None:
        records = []
        for seed in cell.seeds:
            try:
                records.append(read_result(result_path(results_dir, cell.method, cell.task, seed)))
            except ClBenchError as e:
                out.append(f"seed {seed}: {e}")
    for rec in records:
        if rec.seed in cell.seeds:
            out += [f"seed {rec.seed}: {r}" for r in suspect_reasons(rec, tol.higher_is_better(rec.primary_metric))]
    return out


# --------------------------------------------------------------------------- comparison

@dataclass
class Comparison:
    method: str
    task: str
    metric: str
    status: str
    baseline: Cell | None = None
    current: Cell | None = None
    tolerance: float | None = None
    note: str = ""

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.current is None:
            return None
        return self.current.mean - self.baseline.mean


# Exit codes of ``clbench regress`` (README "Reference results, the leaderboard and the CI gate").
EXIT_OK = 0
EXIT_REGRESSED = 1  # a metric regressed beyond tolerance, or a current result fails the sanity gate
EXIT_ERROR = 2  # a usage error: unknown task/method name, a results/baseline dir that does not exist
EXIT_MISSING = 3  # a baseline cell has no comparable current result (missing or incomparable)
EXIT_NOTHING = 4  # nothing was compared: no (method, task) has comparable results on both sides


@dataclass
class RegressReport:
    rows: list[Comparison] = field(default_factory=list)
    allow_missing: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    @property
    def compared(self) -> int:
        """(method, task) pairs whose primary metric was compared on both sides."""
        return len({(r.method, r.task) for r in self.rows
                    if r.status in ("improved", "unchanged", "regressed")
                    or (r.status == "suspect" and r.baseline is not None)})

    @property
    def exit_code(self) -> int:
        if any(r.status in FAILING for r in self.rows):
            return EXIT_REGRESSED
        if self.compared == 0:
            return EXIT_NOTHING
        if not self.allow_missing and any(r.status in INCOMPLETE for r in self.rows):
            return EXIT_MISSING
        return EXIT_OK

    @property
    def failed(self) -> bool:
        return self.exit_code != EXIT_OK

    @property
    def verdict(self) -> str:
        return "OK" if self.exit_code == EXIT_OK else "FAIL"

    @property
    def reason(self) -> str:
        code = self.exit_code
        if code == EXIT_REGRESSED:
            return f"regression or suspect result (exit {code})"
        if code == EXIT_NOTHING:
            return (f"nothing was compared: no method/task has comparable results on both sides (exit {code}); "
                    "check --results-dir, --baseline, --tasks and --methods")
        if code == EXIT_MISSING:
            n = self.count("missing") + self.count("incomparable")
            return (f"{n} baseline cell(s) missing or incomparable in the current results (exit {code}); "
                    "re-run them, or pass --allow-missing to accept that")
        accepted = self.count("missing") + self.count("incomparable")
        return f"{self.compared} method/task pair(s) compared" + (
            f"; {accepted} missing or incomparable cell(s) accepted (--allow-missing)" if accepted else "")


def metric_cells(results_dir: Path, registry: Registry, tasks: list[str] | None,
               methods: list[str] | None) -> tuple[dict[tuple[str, str, str], Cell], Summary]:
    """Cells for every metric of every task, keyed (method, task, metric); plus the primary summary.

    One pass over the results (:func:`cl_bench.report.table.collect`); every metric's cells come
    from the records held in memory."""
    primary, specs = collect(results_dir, registry, tasks, methods)
    primary.cells = primary.cells_for(None, specs)
    cells = {(c.method, c.task, c.metric): c for c in primary.cells}
    for (m, t), recs in sorted(primary.records.items()):
        for name in specs[t].metrics:
            if name != specs[t].primary_metric and (cell := cell_of(m, t, name, recs)) is not None:
                cells[(m, t, name)] = cell
    return cells, primary


def result_names(results_dir: Path) -> tuple[set[str], set[str]]:
    """(method ids, task ids) that have a folder in ``results_dir`` (cheap: no file is read)."""
    root = Path(results_dir)
    if not root.is_dir():
        return set(), set()
    methods = {p.name for p in root.iterdir() if p.is_dir() and p.name != LOCK_DIR}
    tasks = {t.name for m in methods for t in (root / m).iterdir() if t.is_dir()}
    return methods, tasks


def check_names(registry: Registry, tasks: list[str] | None, methods: list[str] | None,
                results_dirs: list[Path] = ()) -> None:
    """Every name given must exist: a task in the registry, a method in the registry or among the
    results being read. A typo is an error, never a filter that quietly matches nothing."""
    known_methods = set(registry.method_ids())
    for d in results_dirs:
        known_methods |= result_names(d)[0]
    known_tasks = set(registry.task_ids())
    for kind, names, known in (("task", tasks, known_tasks), ("method", methods, known_methods)):
        for name in names or []:
            if name not in known:
                raise ClBenchError(f"unknown {kind} '{name}'{did_you_mean(name, known)}; "
                                   f"`clbench list {kind}s` shows them all")


def compare(
    current_dir: Path,
    baseline_dir: Path,
    registry: Registry,
    tasks: list[str] | None = None,
    methods: list[str] | None = None,
    allow_missing: bool = False,
) -> RegressReport:
    for what, d, flag in (("baseline", baseline_dir, "--baseline"), ("results", current_dir, "--results-dir")):
        if not Path(d).is_dir():
            raise ClBenchError(f"{what} directory {d} does not exist or is not a directory; pass {flag} DIR")
    check_names(registry, tasks, methods, [Path(current_dir), Path(baseline_dir)])
    base_cells, base_sum = metric_cells(Path(baseline_dir), registry, tasks, methods)
    cur_cells, cur_sum = metric_cells(Path(current_dir), registry, tasks, methods)
    base_stale = {(s.method, s.task): s for s in base_sum.stale}
    cur_stale = {(s.method, s.task): s for s in cur_sum.stale}
    pairs = sorted({(m, t) for m, t, _ in base_cells} | {(m, t) for m, t, _ in cur_cells}
                   | set(base_stale) | set(cur_stale), key=lambda p: (p[1], p[0]))
    report = RegressReport(allow_missing=allow_missing)
    known = set(registry.task_ids())
    specs: dict[str, TaskSpec] = {}
    for method, task in pairs:
        if task not in known:
            report.rows.append(Comparison(method, task, "*", "incomparable", note="task no longer in the registry"))
            continue
        if task not in specs:
            specs[task] = registry.task(task)
        spec = specs[task]
        tol = tolerance_for(spec)
        metric_names = [spec.primary_metric] + [m for m in spec.metrics if m != spec.primary_metric]
        for metric in metric_names:
            b, c = base_cells.get((method, task, metric)), cur_cells.get((method, task, metric))
            if b is None and c is None:
                if metric == spec.primary_metric and (method, task) in base_stale:
                    report.rows.append(Comparison(method, task, metric, "incomparable",
                                                  note="baseline " + base_stale[(method, task)].reason))
                elif metric == spec.primary_metric and (method, task) in cur_stale:
                    report.rows.append(Comparison(method, task, metric, "incomparable",
                                                  note="current " + cur_stale[(method, task)].reason))
                continue
            report.rows.append(_judge(method, task, metric, b, c, tol, spec,
                                      cur_sum.records.get((method, task), []),
                                      base_stale.get((method, task)), cur_stale.get((method, task))))
    return report


def _judge(method: str, task: str, metric: str, b: Cell | None, c: Cell | None, tol: Tolerance,
           spec: TaskSpec, current_records: list[ResultRecord], b_stale: Any, c_stale: Any) -> Comparison:
    if c is not None and metric == spec.primary_metric:
        reasons = cell_suspects(Path(), c, tol, records=current_records)
        if reasons:
            return Comparison(method, task, metric, "suspect", b, c, note="; ".join(reasons))
    if b is None:
        if b_stale is not None:
            return Comparison(method, task, metric, "incomparable", None, c, note="baseline " + b_stale.reason)
        return Comparison(method, task, metric, "new", None, c, note="no baseline result")
    if c is None:
        if c_stale is not None:
            return Comparison(method, task, metric, "incomparable", b, None, note="current " + c_stale.reason)
        return Comparison(method, task, metric, "missing", b, None, note="no current result")
    width = tol.width(b.std)
    gain = (c.mean - b.mean) * (1 if tol.higher_is_better(metric) else -1)
    status = "improved" if gain > width else "regressed" if gain < -width else "unchanged"
    return Comparison(method, task, metric, status, b, c, tolerance=width)


def _fmt_cell(c: Cell | None) -> str:
    if c is None:
        return "—"
    return f"{c.mean:.2f}" + ("" if math.isnan(c.std) else f" ± {c.std:.2f}") + f" (n={c.n})"


def render_report(report: RegressReport) -> str:
    head = ["status", "method", "task", "metric", "baseline", "current", "delta", "tolerance", "note"]
    rows = []
    for r in report.rows:
        delta = "" if r.delta is None else f"{r.delta:+.2f}"
        tol = "" if r.tolerance is None else f"±{r.tolerance:.2f}"
        rows.append([r.status.upper() if r.status in FAILING else r.status, r.method, r.task, r.metric,
                     _fmt_cell(r.baseline), _fmt_cell(r.current), delta, tol, r.note])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    counts = ", ".join(f"{report.count(s)} {s}" for s in
                       ("improved", "unchanged", "regressed", "missing", "incomparable", "suspect", "new"))
    if not report.rows:
        lines = ["(nothing to compare)"]
    return "\n".join(lines + ["", f"{report.verdict}: {counts}", report.reason]) + "\n"
