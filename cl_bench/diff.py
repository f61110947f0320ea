"""``clbench diff A B``: which evaluated items flipped between two results.

Both results must be of the same task measured on the same data (same dataset fingerprint);
items are matched by id. The summary counts both-right / both-wrong / fixed (wrong in A, right
in B) / broken (right in A, wrong in B) and gives McNemar's exact test on the discordant pairs
(two-sided binomial test of fixed vs broken), so a researcher can tell a real change from noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from cl_bench.errors import ClBenchError
from cl_bench.predictions import Predictions, read_predictions
from cl_bench.specs import ResultRecord, load_result


@dataclass
class ItemFlip:
    item: str
    target: str | None
    pred_a: str
    pred_b: str
    kind: str  # fixed | broken | changed (wrong in both, different prediction)


@dataclass
class DiffReport:
    a: ResultRecord
    b: ResultRecord
    n: int
    both_right: int
    both_wrong: int
    fixed: int
    broken: int
    mcnemar_p: float
    flips: list[ItemFlip]

    def to_json(self) -> dict[str, object]:
        return {
            "a": {"method": self.a.method, "task": self.a.task, "seed": self.a.seed,
                  "model_fingerprint": self.a.model_fingerprint},
            "b": {"method": self.b.method, "task": self.b.task, "seed": self.b.seed,
                  "model_fingerprint": self.b.model_fingerprint},
            "n": self.n, "both_right": self.both_right, "both_wrong": self.both_wrong,
            "fixed": self.fixed, "broken": self.broken, "mcnemar_p": self.mcnemar_p,
            "flips": [f.__dict__ for f in self.flips],
        }

    def to_text(self, limit: int = 20) -> str:
        def who(r: ResultRecord) -> str:
            return f"{r.method} seed {r.seed} (model {r.model_fingerprint[:12]})"

        lines = [
            f"task {self.a.task}: A = {who(self.a)}, B = {who(self.b)}",
            f"{self.n} items: {self.both_right} right in both, {self.both_wrong} wrong in both, "
            f"{self.fixed} fixed (wrong in A, right in B), {self.broken} broken (right in A, wrong in B); "
            f"McNemar exact p = {self.mcnemar_p:.3g}",
        ]
        if self.a.extras.get("predictions_of"):  # the protocol says what its rows verdict, when not the primary metric
            lines.insert(1, f"per-item verdicts: {self.a.extras['predictions_of']}")
        shown = [f for f in self.flips if f.kind != "changed"][:limit]
        if shown:
            lines.append("item\ttarget\tA\tB\tflip")
            lines += [f"{f.item}\t{f.target if f.target is not None else '-'}\t{f.pred_a}\t{f.pred_b}\t{f.kind}"
                      for f in shown]
            n_flips = self.fixed + self.broken
            if n_flips > len(shown):
                lines.append(f"... {n_flips - len(shown)} more (--limit N, or --format json for all)")
        return "\n".join(lines)


def _load(path: Path) -> tuple[ResultRecord, Predictions]:
    if not Path(path).is_file():
        raise ClBenchError(f"{path} is not a result file; pass results/<method>/<task>/seed<k>.json")
    record = load_result(Path(path))
    return record, read_predictions(Path(path), record.predictions)


def align(pa: Predictions, pb: Predictions) -> np.ndarray:
    """For each item of A (in A's order), its row in B; raises if the two item sets differ."""
    if len(pa.item) != len(pb.item) or set(pa.item.tolist()) != set(pb.item.tolist()):
        raise ClBenchError(
            f"the two results scored different items ({len(pa.item)} vs {len(pb.item)}); "
            "compare results of the same task and data"
        )
    pos_b = {v: i for i, v in enumerate(pb.item.tolist())}
    ib = np.asarray([pos_b[v] for v in pa.item.tolist()], dtype=np.int64)
    return ib


def diff_results(path_a: Path, path_b: Path) -> DiffReport:
    a, pa = _load(path_a)
    b, pb = _load(path_b)
    if a.task != b.task:
        raise ClBenchError(f"A is task '{a.task}' but B is task '{b.task}'; diff compares runs of one task")
    if a.dataset_fingerprint != b.dataset_fingerprint:
        raise ClBenchError(
            f"A and B were evaluated on different data (dataset fingerprints {a.dataset_fingerprint[:12]} "
            f"vs {b.dataset_fingerprint[:12]}); re-run both under the same task version"
        )
    ib = align(pa, pb)
    ca, cb = pa.correct, pb.correct[ib]
    flips = []
    for i, j in enumerate(ib):
        same_pred = pa.pred[i] == pb.pred[j]
        kind = "fixed" if cb[i] and not ca[i] else "broken" if ca[i] and not cb[i] else (
            "changed" if not ca[i] and not same_pred else "")
        if kind:
            target = None if pa.target is None else str(pa.target[i])
            flips.append(ItemFlip(str(pa.item[i]), target, str(pa.pred[i]), str(pb.pred[j]), kind))
    fixed, broken = int((~ca & cb).sum()), int((ca & ~cb).sum())
    p = binomtest(min(fixed, broken), fixed + broken, 0.5).pvalue if fixed + broken else 1.0
    return DiffReport(a, b, len(ib), int((ca & cb).sum()), int((~ca & ~cb).sum()), fixed, broken, float(p), flips)
