"""Bitext mining (protocol ``bitext``): MTEB's scores and LASER's error rates on the same embeddings.

Per language pair (source ``xxx`` sentences, target English sentences, line i <-> line i):

- MTEB (``BitextMiningEvaluator`` + ``AbsTaskBitextMining._compute_metrics``): each source sentence
  retrieves its top-1 target by cosine; with gold = identity, ``accuracy`` and scikit-learn's
  weighted ``precision`` / ``recall`` / ``f1`` (zero_division=0) over (gold index, retrieved index).
  Computed in closed form: every gold label has support 1, so recall = accuracy and, for a
  correctly retrieved target j that c_j queries retrieved, precision_j = 1/c_j, F1_j = 2/(1+c_j).
- LASER (``source/xsim.py``): error rate = share of sentences whose retrieved neighbour is not the
  aligned one, in both directions (source->target, target->source), with plain nearest neighbour
  (margin "absolute") and with the margin criterion (default "ratio", k = 4): among a query's k
  nearest candidates pick the one maximising cos(x, y) / ((avg_k(x) + avg_k(y)) / 2), where avg_k
  is the mean cosine of a sentence to its k nearest neighbours on the other side ("distance" uses
  the difference instead of the ratio). The headline LASER number is the mean of both directions.

Ties go to the lowest index (argmax). Every metric is in percent; the task's numbers are the
unweighted mean over pairs, and each pair's numbers are in ``extras["pairs"]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from cl_bench.budget import Budget, Budgeted, first
from cl_bench.components import register
from cl_bench.data.subsets import take
from cl_bench.data.text.types import BitextData, BitextPair
from cl_bench.errors import ClBenchError
from cl_bench.predictions import Predictions
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext
from cl_bench.protocols.knn import _nearest as nearest_lowest_first

MTEB_METRICS = ("accuracy", "precision", "recall", "f1")
LASER_METRICS = (
    "error_nn", "error_nn_src2tgt", "error_nn_tgt2src",
    "error_margin", "error_margin_src2tgt", "error_margin_tgt2src",
)


class BitextParams(ProtocolParams):
    margin: Literal["ratio", "distance"] = "ratio"
    margin_k: int = Field(default=4, ge=1)
    chunk_size: int = Field(default=2048, ge=1)  # query rows per similarity block


def l2_normalize(x: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if t.ndim != 2:
        raise ClBenchError(f"embeddings must be [N, D], got shape {tuple(t.shape)}")
    return t / t.norm(dim=1, keepdim=True).clamp(min=1e-12)


def top_k(queries: torch.Tensor, keys: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and indices of each (normalised) query's k nearest keys.

    Among equal cosines the lower key index is nearer; for k = 1 the index is the argmax, for
    k > 1 each row lists its k keys in index order (so a later argmax over them also resolves
    ties to the lowest index)."""
    vals, idxs = [], []
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ keys.T
        if k == 1:
            v, i = sims.max(dim=1, keepdim=True)
        else:
            v, i = nearest_lowest_first(sims, k)
        vals.append(v)
        idxs.append(i)
    return torch.cat(vals), torch.cat(idxs)


def nearest(src: torch.Tensor, tgt: torch.Tensor, chunk: int = 2048) -> np.ndarray:
    """Index of each source row's nearest target row by cosine."""
    return top_k(src, tgt, 1, chunk)[1][:, 0].numpy()


def margin_nearest(
    src: torch.Tensor, tgt: torch.Tensor, k: int, margin: str = "ratio", chunk: int = 2048
) -> np.ndarray:
    """LASER's xSIM retrieval: the best of each source row's k nearest targets by margin score."""
    k = min(k, len(src), len(tgt))
    cos_st, idx_st = top_k(src, tgt, k, chunk)
    cos_ts, _ = top_k(tgt, src, k, chunk)
    avg_s = cos_st.mean(dim=1)  # [Ns]
    avg_t = cos_ts.mean(dim=1)  # [Nt]
    denom = (avg_s[:, None] + avg_t[idx_st]) / 2
    scores = cos_st / denom if margin == "ratio" else cos_st - denom
    best = scores.argmax(dim=1)
    return idx_st.gather(1, best[:, None])[:, 0].numpy()


def mteb_scores(pred: np.ndarray) -> dict[str, float]:
    """accuracy and sklearn's weighted precision/recall/F1 (zero_division=0) for gold i -> i, in %."""
    n = len(pred)
    gold = np.arange(n)
    correct = pred == gold
    if n == 0:
        raise ClBenchError("bitext scoring got no sentences")
    counts = np.bincount(pred, minlength=n).astype(np.float64)  # how many queries retrieved each target
    c = counts[correct]  # for each correctly retrieved target j: c_j >= 1
    acc = correct.mean()
    precision = (1.0 / c).sum() / n
    f1 = (2.0 / (1.0 + c)).sum() / n
    return {"accuracy": 100 * acc, "precision": 100 * precision, "recall": 100 * acc, "f1": 100 * f1}


def error_rate(pred: np.ndarray) -> float:
    return float(100.0 * (pred != np.arange(len(pred))).mean())


FULL_MATRIX_MAX = 1 << 26  # similarity entries computed at once (256 MiB of float32)


def _margin_from_matrix(sim: torch.Tensor, k: int, margin: str) -> tuple[np.ndarray, np.ndarray]:
    """xSIM retrieval both ways from one similarity matrix [Ns, Nt]: (src->tgt, tgt->src).

    Candidates come in index order (ties at the k-th cosine keep the lower index), so the argmax
    of the margin scores resolves ties to the lowest index, as the module promises."""
    k = min(k, *sim.shape)
    cos_st, idx_st = nearest_lowest_first(sim, k)
    cos_ts, idx_ts = nearest_lowest_first(sim.T.contiguous(), k)
    avg_s, avg_t = cos_st.mean(dim=1), cos_ts.mean(dim=1)

    def pick(cos: torch.Tensor, idx: torch.Tensor, avg_q: torch.Tensor, avg_k: torch.Tensor) -> np.ndarray:
        denom = (avg_q[:, None] + avg_k[idx]) / 2
        scores = cos / denom if margin == "ratio" else cos - denom
        return idx.gather(1, scores.argmax(dim=1, keepdim=True))[:, 0].numpy()

    return pick(cos_st, idx_st, avg_s, avg_t), pick(cos_ts, idx_ts, avg_t, avg_s)


def score_pair(src_emb: np.ndarray, tgt_emb: np.ndarray, params: BitextParams) -> dict[str, float]:
    """Every bitext metric of one aligned pair from its source and target embeddings."""
    return score_pair_with_retrieved(src_emb, tgt_emb, params)[0]


def score_pair_with_retrieved(
    src_emb: np.ndarray, tgt_emb: np.ndarray, params: BitextParams
) -> tuple[dict[str, float], np.ndarray]:
    """:func:`score_pair` plus the target each source sentence retrieves (nearest neighbour), the
    retrieval MTEB's accuracy / precision / recall / F1 are computed from."""
    if src_emb.shape != tgt_emb.shape:
        raise ClBenchError(f"source embeddings {src_emb.shape} and target embeddings {tgt_emb.shape} differ")
    src, tgt = l2_normalize(src_emb), l2_normalize(tgt_emb)
    if len(src) * len(tgt) <= FULL_MATRIX_MAX:  # one matrix serves both directions
        sim = src @ tgt.T
        nn_st, nn_ts = sim.argmax(dim=1).numpy(), sim.argmax(dim=0).numpy()
        mg_st, mg_ts = _margin_from_matrix(sim, params.margin_k, params.margin)
    else:
        nn_st = nearest(src, tgt, params.chunk_size)
        nn_ts = nearest(tgt, src, params.chunk_size)
        mg_st = margin_nearest(src, tgt, params.margin_k, params.margin, params.chunk_size)
        mg_ts = margin_nearest(tgt, src, params.margin_k, params.margin, params.chunk_size)
    out = mteb_scores(nn_st)
    out["error_nn_src2tgt"], out["error_nn_tgt2src"] = error_rate(nn_st), error_rate(nn_ts)
    out["error_nn"] = (out["error_nn_src2tgt"] + out["error_nn_tgt2src"]) / 2
    out["error_margin_src2tgt"], out["error_margin_tgt2src"] = error_rate(mg_st), error_rate(mg_ts)
    out["error_margin"] = (out["error_margin_src2tgt"] + out["error_margin_tgt2src"]) / 2
    return {k: float(v) for k, v in out.items()}, nn_st


def bitext_budget(params: BitextParams, data: BitextData, budget: Budget) -> Budgeted:
    """The first N aligned sentences of every language pair (each pair still scored on its own, then averaged)."""
    n = budget.eval_items
    pairs = []
    for pair in data.pairs:
        idx = first(len(pair.source), n)
        pairs.append(BitextPair(pair.name, take(pair.source, idx), take(pair.target, idx), dict(pair.meta)))
    kept, total = sum(len(p.source) for p in pairs), sum(len(p.source) for p in data.pairs)
    return Budgeted(params, dataclasses.replace(data, pairs=pairs), {
        "sentences": f"first {n} of each of the {len(pairs)} language pairs: {kept} of {total} sentence pairs"})


def run_bitext(model: Any, data: Any, params: BitextParams, ctx: RunContext) -> ProtocolResult:
    if not isinstance(data, BitextData):
        raise ClBenchError(f"protocol bitext needs bitext data (e.g. dataset tatoeba), got {type(data).__name__}")
    per_pair: dict[str, dict[str, float]] = {}
    items: list[str] = []
    retrieved: list[np.ndarray] = []
    for pair in data.pairs:
        src = ctx.features(model, pair.source)
        tgt = ctx.features(model, pair.target)
        scores, nn_st = score_pair_with_retrieved(src, tgt, params)
        per_pair[pair.name] = {**scores, "n": float(len(pair.source))}
        items += [f"{pair.name}:{i}" for i in range(len(nn_st))]
        retrieved.append(nn_st)
    names = [*MTEB_METRICS, *LASER_METRICS]
    metrics = {m: float(np.mean([v[m] for v in per_pair.values()])) for m in names}
    extras = {
        "pairs": per_pair,
        "n_pairs": len(per_pair),
        "margin": params.margin,
        "margin_k": params.margin_k,
        "direction": "accuracy/precision/recall/f1: source (xxx) -> target (eng), as MTEB",
    }
    # One row per (pair, source sentence) of the MTEB direction (source -> target, nearest
    # neighbour), the retrieval the headline f1 / accuracy are computed from: pred = the retrieved
    # target, target = the aligned one, correct = pred == target (MTEB's per-sentence accuracy; a
    # pair's accuracy is 100 * its mean; f1 follows from the preds, see mteb_scores). The LASER
    # error rates (both directions, margin) are not stored per item.
    pred = np.concatenate(retrieved).astype(np.int64)
    gold = np.concatenate([np.arange(len(r)) for r in retrieved]).astype(np.int64)
    preds = Predictions(item=np.array(items), pred=pred, correct=pred == gold, target=gold)
    return ProtocolResult(metrics=metrics, extras=extras, predictions=preds)


register("protocol", "bitext")(
    Protocol("bitext", requires="text_encoder", params=BitextParams, run=run_bitext, data_kind="bitext",
             budget=bitext_budget)
)
