"""``clbench claims``: every paper claim of every method, checked against the committed results.

A claim (``paper.claims`` of a method YAML; grammar in :mod:`cl_bench.claim_statements`) is a
chain ``A > B [> C ...] on TASK``; each adjacent pair is a one-sided test over seeds that A is
better than B (higher, or lower for a lower-is-better metric) on comparable results only (the
task's current spec hash, as ``clbench table``):

- ``welch``: Welch's unequal-variance t-test of the two cells' seed values
  (``scipy.stats.ttest_ind(equal_var=False, alternative="greater")``), effect size Cohen's d with
  the two sample variances averaged, ``(mean_A - mean_B) / sqrt((s_A² + s_B²) / 2)``;
- ``paired``: the paired t-test over the seeds both cells have (``scipy.stats.ttest_rel``), effect
  size d_z = mean(A - B) / sd(A - B).

Values are oriented so that larger is better before testing, so ``diff`` > 0 always means the
claimed direction. When the spread the test divides by is exactly zero (deterministic methods),
the sign of the difference decides: p = 0 if it points the claimed way, else 1.

Verdicts: a link **holds** when p < alpha; it **does not hold** otherwise (``contradicted``
when the opposite one-sided test is also below alpha); it is **not measurable** when a cell
has no comparable results, lacks the metric, or has fewer than two seeds (two common seeds for
``paired``). A chain holds when every link holds (an intersection-union test: each link at
alpha keeps the chain at alpha), does not hold when a measured link does not, else is not
measurable.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from cl_bench.claim_statements import Operand, Statement, parse_statement
from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from cl_bench.regress import tolerance_for
from cl_bench.report.table import Summary, collect
from cl_bench.specs import ClaimSpec, ResultRecord

HOLDS, FAILS, UNMEASURABLE = "holds", "does not hold", "not measurable"
MIN_SEEDS = 2


@dataclass
class LinkResult:
    """One ``better > worse`` comparison."""

    better: str
    worse: str
    verdict: str
    reason: str = ""
    n_better: int = 0
    n_worse: int = 0
    mean_better: float | None = None
    mean_worse: float | None = None
    diff: float | None = None  # oriented: > 0 is the claimed direction, in metric units
    effect_size: float | None = None  # Cohen's d (welch) or d_z (paired), oriented like diff
    p_value: float | None = None
    contradicted: bool = False


@dataclass
class ClaimResult:
    method: str  # whose paper makes the claim
    statement: str
    test: str
    alpha: float
    task: str
    metric: str
    higher_is_better: bool
    verdict: str
    source: str = ""
    links: list[LinkResult] = field(default_factory=list)


def one_sided_test(better: np.ndarray, worse: np.ndarray, test: str) -> tuple[float, float, float]:
    """(diff, effect size, p) of H1 "better > worse" for oriented values (larger = better).
    ``paired`` expects equal-length arrays aligned by seed."""
    if test == "paired":
        d = better - worse
        diff, sd = float(d.mean()), 0.0 if _constant(d) else float(d.std(ddof=1))
        if sd == 0.0:
            return diff, math.copysign(math.inf, diff) if diff else 0.0, 0.0 if diff > 0 else 1.0
        p = float(stats.ttest_rel(better, worse, alternative="greater").pvalue)
        return diff, diff / sd, p
    diff = float(better.mean() - worse.mean())
    va, vb = (0.0 if _constant(x) else float(x.var(ddof=1)) for x in (better, worse))
    if va == 0.0 and vb == 0.0:
        return diff, math.copysign(math.inf, diff) if diff else 0.0, 0.0 if diff > 0 else 1.0
    with warnings.catch_warnings():
        # one side's seeds all scored the same (a deterministic cell): its variance is exactly 0, and
        # scipy's "catastrophic cancellation" warning is about the rounding noise of computing that 0
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        p = float(stats.ttest_ind(better, worse, equal_var=False, alternative="greater").pvalue)
    return diff, diff / math.sqrt((va + vb) / 2.0), p


def _constant(x: np.ndarray) -> bool:
    """Every value equal up to float rounding (spread below 1e-9 of the largest magnitude): a
    variance computed from them is rounding noise, not spread (0.3 - 0.2 and 1.1 - 1.0 differ in
    the 17th digit)."""
    return bool(np.ptp(x) <= 1e-9 * float(np.abs(x).max()))


def _values(records: list[ResultRecord], metric: str) -> dict[int, float]:
    return {r.seed: float(r.metrics[metric]) for r in records if r.metrics.get(metric) is not None}


def _side(summary: Summary, op: Operand, task: str, metric: str, stale: set[tuple[str, str]]) -> tuple[dict[int, float], str]:
    records = summary.records.get((op.method, task), [])
    name = op.metric or metric
    if not records:
        why = "only stale results" if (op.method, task) in stale else "no results"
        return {}, f"{op.method} on {task}: {why}"
    values = _values(records, name)
    if not values:
        return {}, f"{op.method} on {task}: no metric '{name}' in its results"
    return values, ""


def evaluate_link(summary: Summary, better: Operand, worse: Operand, task: str, metric: str, higher: bool,
                  test: str, alpha: float, stale: set[tuple[str, str]]) -> LinkResult:
    link = LinkResult(better.text(), worse.text(), UNMEASURABLE)
    a, why_a = _side(summary, better, task, metric, stale)
    b, why_b = _side(summary, worse, task, metric, stale)
    if why_a or why_b:
        link.reason = "; ".join(w for w in (why_a, why_b) if w)
        return link
    if test == "paired":
        seeds = sorted(set(a) & set(b))
        av, bv = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
    else:
        av, bv = np.array(list(a.values())), np.array(list(b.values()))
    link.n_better, link.n_worse = len(av), len(bv)
    link.mean_better, link.mean_worse = float(av.mean()), float(bv.mean())
    if min(len(av), len(bv)) < MIN_SEEDS:
        link.reason = (f"{'common ' if test == 'paired' else ''}seeds: {len(av)} vs {len(bv)}; "
                       f"a t-test needs at least {MIN_SEEDS} per side")
        return link
    sign = 1.0 if higher else -1.0
    link.diff, link.effect_size, link.p_value = one_sided_test(sign * av, sign * bv, test)
    if link.p_value < alpha:
        link.verdict = HOLDS
    else:
        link.verdict = FAILS
        link.contradicted = one_sided_test(sign * bv, sign * av, test)[2] < alpha
    return link


def evaluate_claim(summary: Summary, registry: Registry, method: str, claim: ClaimSpec,
                   stale: set[tuple[str, str]]) -> ClaimResult:
    st: Statement = parse_statement(claim.statement)
    if st.task not in registry.task_ids():
        raise ClBenchError(f"method '{method}': claim {claim.statement!r} names unknown task '{st.task}'")
    unknown = [m for m in st.methods() if m not in registry.method_ids()]
    if unknown:
        raise ClBenchError(f"method '{method}': claim {claim.statement!r} names unknown method(s) {', '.join(unknown)}")
    spec = registry.task(st.task)
    metric = st.metric or spec.primary_metric
    higher = tolerance_for(spec).higher_is_better(metric)
    links = [evaluate_link(summary, b, w, st.task, metric, higher, claim.test, claim.alpha, stale)
             for b, w in st.links()]
    verdicts = {link.verdict for link in links}
    verdict = FAILS if FAILS in verdicts else (UNMEASURABLE if UNMEASURABLE in verdicts else HOLDS)
    return ClaimResult(method, claim.statement, claim.test, claim.alpha, st.task, metric, higher, verdict,
                       claim.source, links)


def evaluate_all(results_dir: Path, registry: Registry, methods: list[str] | None = None) -> list[ClaimResult]:
    """Every claim of every method (or of ``methods``), in method-id order, from ``results_dir``."""
    specs = [registry.method(m) for m in (methods or registry.method_ids())]
    claimed = [(s.id, c) for s in specs if s.paper is not None for c in s.paper.claims]
    if not claimed:
        return []
    involved = {m for _, c in claimed for m in parse_statement(c.statement).methods()}
    tasks = sorted({parse_statement(c.statement).task for _, c in claimed})
    summary, _ = collect(Path(results_dir), registry, tasks=tasks, methods=sorted(involved))
    stale = {(s.method, s.task) for s in summary.stale}
    return [evaluate_claim(summary, registry, m, c, stale) for m, c in claimed]


def _num(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "—"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"


def render(results: list[ClaimResult], fmt: str = "markdown") -> str:
    if fmt == "json":
        return json.dumps([asdict(r) for r in results], indent=2, allow_nan=True) + "\n"
    lines = ["| method | claim | test (α) | n | mean better vs worse | Δ | d | p | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for k, link in enumerate(r.links):
            claim = f"{r.statement} [{r.metric}{'' if r.higher_is_better else ', lower is better'}]" if k == 0 else "↳"
            means = ("—" if link.mean_better is None
                     else f"{_num(link.mean_better, 2)} vs {_num(link.mean_worse, 2)}")
            verdict = link.verdict if len(r.links) == 1 else f"{link.verdict} (link)"
            if link.contradicted:
                verdict += ", contradicted"
            if link.reason:
                verdict += f": {link.reason}"
            lines.append(f"| {r.method if k == 0 else ''} | {claim} | {r.test} ({r.alpha:g}) | "
                         f"{link.n_better} vs {link.n_worse} | {means} | {_num(link.diff)} | "
                         f"{_num(link.effect_size, 2)} | {_num(link.p_value)} | {verdict} |")
        if len(r.links) > 1:
            lines.append(f"| | ↳ chain | | | | | | | **{r.verdict}** |")
    counts = {v: sum(r.verdict == v for r in results) for v in (HOLDS, FAILS, UNMEASURABLE)}
    lines.append("")
    lines.append(f"{len(results)} claim(s): " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return "\n".join(lines) + "\n"


def summary_counts(results: list[ClaimResult]) -> dict[str, Any]:
    return {v: sum(r.verdict == v for r in results) for v in (HOLDS, FAILS, UNMEASURABLE)}
