"""Semantic textual similarity (protocol ``sts``): correlation of cosine similarity with gold scores.

As MTEB's STS evaluator: embed both sides, score each pair by the cosine of its two embeddings,
report Spearman's rank correlation with the gold scores (``cosine_spearman``, the main score)
and Pearson's (``cosine_pearson``), both × 100.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr

from cl_bench.budget import Budget, Budgeted, first, of
from cl_bench.components import register
from cl_bench.data.subsets import take
from cl_bench.data.text.types import ScoredPairData
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext


class STSParams(ProtocolParams):
    pass


def paired_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of row i of ``a`` with row i of ``b`` (a zero vector has cosine 0 with anything)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ClBenchError(f"embeddings of the two sides differ in shape: {a.shape} vs {b.shape}")
    na = np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    nb = np.maximum(np.linalg.norm(b, axis=1), 1e-12)
    return (a * b).sum(axis=1) / (na * nb)


def sts_scores(cosines: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    if np.ptp(gold) == 0:
        raise ClBenchError("every gold score is the same: a correlation is undefined")
    if np.ptp(cosines) == 0:  # a constant model: no ranking information at all
        return {"cosine_spearman": 0.0, "cosine_pearson": 0.0}
    return {
        "cosine_spearman": float(100 * spearmanr(cosines, gold).statistic),
        "cosine_pearson": float(100 * pearsonr(cosines, gold).statistic),
    }


def run_sts(model: Any, data: Any, params: STSParams, ctx: RunContext) -> ProtocolResult:
    if not isinstance(data, ScoredPairData):
        raise ClBenchError(f"protocol sts needs scored sentence pairs (e.g. dataset sts-synthetic), got {type(data).__name__}")
    cos = paired_cosine(ctx.features(model, data.first), ctx.features(model, data.second))
    metrics = sts_scores(cos, data.gold)
    return ProtocolResult(metrics=metrics, extras={"n": len(cos), "mean_cosine": float(cos.mean())})


def sts_budget(params: STSParams, data: ScoredPairData, budget: Budget) -> Budgeted:
    """The first N scored pairs."""
    idx = first(len(data.gold), budget.eval_items)
    reduced = dataclasses.replace(data, first=take(data.first, idx), second=take(data.second, idx), gold=data.gold[idx])
    return Budgeted(params, reduced, {"pairs": of(len(idx), len(data.gold), "scored pairs")})


register("protocol", "sts")(Protocol("sts", requires="text_encoder", params=STSParams, run=run_sts, data_kind="sts",
                                     budget=sts_budget))
