"""How well one task ranks methods like another: Spearman's rank correlation between the two
tasks' mean primary metrics over the methods both have comparable results for (e.g. the fast
L-BFGS probe against the papers' SGD linear evaluation). Per-seed ranks are reported too: the
correlation of seed k's numbers on both tasks, for every seed both tasks have, so a reader sees
how much of the agreement survives seed noise.

The p-value is exact for up to :data:`EXACT_MAX` methods (two-sided: the share of all orderings
of one task's ranks whose |rho| reaches the observed one; with 4 methods even rho = 1 only gets
p = 2/24), scipy's t approximation beyond.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from cl_bench.report.table import summarize
from cl_bench.store import is_comparable, iter_results

EXACT_MAX = 8  # methods up to which the p-value enumerates every permutation (8! = 40,320)


@dataclass
class RankAgreement:
    task_a: str
    task_b: str
    methods: list[str]
    means_a: list[float]
    means_b: list[float]
    spearman: float
    p_value: float
    kendall: float
    per_seed: dict[int, float] = field(default_factory=dict)  # seed -> Spearman of that seed's numbers

    def render(self) -> str:
        order = np.argsort(self.means_a)[::-1]
        lines = [f"| method | {self.task_a} | {self.task_b} |", "| --- | ---: | ---: |"]
        lines += [f"| {self.methods[i]} | {self.means_a[i]:.2f} | {self.means_b[i]:.2f} |" for i in order]
        lines.append("")
        lines.append(f"Spearman rho = {self.spearman:.3f} (p = {self.p_value:.3g}), Kendall tau = {self.kendall:.3f}, "
                     f"over {len(self.methods)} methods (means over seeds)")
        if self.per_seed:
            lines.append("per seed: " + ", ".join(f"seed {s}: rho = {r:.3f}" for s, r in sorted(self.per_seed.items())))
        return "\n".join(lines) + "\n"


def rank_agreement(results_dir: Path, registry: Registry, task_a: str, task_b: str,
                   methods: list[str] | None = None) -> RankAgreement:
    """Spearman / Kendall between ``task_a`` and ``task_b`` over their common methods (current specs only)."""
    summary = summarize(Path(results_dir), registry, tasks=[task_a, task_b], methods=methods)
    common = sorted(m for m in summary.methods() if summary.cell(m, task_a) and summary.cell(m, task_b))
    if len(common) < 3:
        raise ClBenchError(f"rank agreement needs at least 3 methods with results on both {task_a} and {task_b}; "
                           f"found {len(common)} ({', '.join(common) or 'none'}): run clbench sweep first")
    a = [summary.cell(m, task_a).mean for m in common]  # type: ignore[union-attr]
    b = [summary.cell(m, task_b).mean for m in common]  # type: ignore[union-attr]
    rho, p = stats.spearmanr(a, b)
    if len(common) <= EXACT_MAX:
        p = exact_spearman_p(a, b)
    tau = stats.kendalltau(a, b).statistic
    return RankAgreement(task_a, task_b, common, a, b, float(rho), float(p), float(tau),
                         _per_seed(Path(results_dir), registry, task_a, task_b, common))


def exact_spearman_p(a: list[float], b: list[float]) -> float:
    """Two-sided permutation p-value of Spearman's rho: P(|rho(a, perm(b))| >= |rho(a, b)|)."""
    import itertools

    ra, rb = stats.rankdata(a), stats.rankdata(b)
    observed = abs(stats.pearsonr(ra, rb).statistic)
    perms = list(itertools.permutations(rb))
    hits = sum(abs(stats.pearsonr(ra, q).statistic) >= observed - 1e-12 for q in perms)
    return hits / len(perms)


def _per_seed(results_dir: Path, registry: Registry, task_a: str, task_b: str, methods: list[str]) -> dict[int, float]:
    specs = {t: registry.task(t) for t in (task_a, task_b)}
    values: dict[tuple[str, str, int], float] = {}
    for _, rec in iter_results(results_dir):
        spec = specs.get(rec.task)
        if spec is not None and rec.method in methods and is_comparable(rec, spec):
            values[(rec.method, rec.task, rec.seed)] = rec.metrics[spec.primary_metric]
    seeds = sorted({s for (_, _, s) in values})
    out = {}
    for s in seeds:
        if all((m, t, s) in values for m in methods for t in (task_a, task_b)):
            rho = stats.spearmanr([values[(m, task_a, s)] for m in methods], [values[(m, task_b, s)] for m in methods])[0]
            out[s] = float(rho)
    return out
