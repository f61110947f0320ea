"""MMVP-VLM scoring (protocol ``mmvp_vlm``), as tsb0601/MMVP ``scripts/evaluate_vlm.py`` does it.

For each pair (images 1 and 2, statements 1 and 2) and each statement: the text is
``prefix + statement`` ("a photo of " + statement); its logits against the pair's two images are
``logit_scale * cos(text, image)`` (CLIP's ``logits_per_text``; the scale is the model's own
``exp(logit_scale)``, else 100, or the task's ``logit_scale``); a softmax over the two gives
p(image 1), and the statement picks image 1 iff p(image 1) > 0.5 — so an exact tie picks image 2.
The statement's own image is image 1 when its qid is odd, image 2 when even (the script's
ground truth). A pair counts only if BOTH statements pick their own image.

Metrics (percent): ``average`` = the unweighted mean over patterns of the per-pattern pair
accuracy (the headline; the script divides by 15 pairs per pattern, here by the pattern's pair
count, the same on the release); ``pairs`` = all pairs pooled; ``statements`` = single
statements right. ``extras["per_pattern"]`` = {pattern: pair accuracy} (the leaderboard's bars).
Embeddings come from ``ctx.features`` (cached): one ImageList of every image, one TextSplit of
every prompt.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pydantic import Field

from cl_bench.budget import Budget, Budgeted
from cl_bench.components import register
from cl_bench.data.image_text.mmvp import MMVPData, own_image
from cl_bench.data.subsets import take
from cl_bench.data.text.types import TextSplit
from cl_bench.errors import ClBenchError
from cl_bench.predictions import Predictions
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext


class MMVPParams(ProtocolParams):
    prefix: str = "a photo of "
    logit_scale: float | None = Field(default=None, gt=0)  # None: the model's exp(logit_scale), else 100


def model_logit_scale(model: Any) -> float:
    """The model's inverse temperature: ``exp(model.logit_scale)`` (CLIP's log-parametrised
    scale; a plain number is taken as the scale itself), or CLIP's released 100."""
    value = getattr(model, "logit_scale", None)
    if value is None:
        return 100.0
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().exp().cpu())
    return float(value)


def pick_image_one(text_emb: np.ndarray, image_emb: np.ndarray, scale: float) -> np.ndarray:
    """For statement i (pair i // 2): True iff softmax(scale * cos(text_i, [img_a, img_b]))[0] > 0.5."""
    t = torch.as_tensor(np.asarray(text_emb, np.float32))
    v = torch.as_tensor(np.asarray(image_emb, np.float32))
    t = t / t.norm(dim=1, keepdim=True)
    v = v / v.norm(dim=1, keepdim=True)
    pair_images = v.reshape(-1, 2, v.shape[1]).repeat_interleave(2, dim=0)  # [2N, 2, D]
    logits = scale * torch.einsum("nd,nkd->nk", t, pair_images)
    probs = logits.softmax(dim=-1)
    return (probs[:, 0] > 0.5).numpy()


def mmvp_scores(text_emb: np.ndarray, image_emb: np.ndarray, qids: np.ndarray, patterns: list[str],
                scale: float) -> dict[str, Any]:
    """Per-statement picks, per-pair verdicts and the per-pattern / pooled accuracies (percent)."""
    n = len(patterns)
    if text_emb.shape[0] != 2 * n or image_emb.shape[0] != 2 * n:
        raise ClBenchError(f"mmvp_vlm: {text_emb.shape[0]} text and {image_emb.shape[0]} image embeddings "
                           f"for {n} pairs (need {2 * n} each)")
    picks_one = pick_image_one(text_emb, image_emb, scale)
    truth_one = np.array([own_image(int(q)) == 0 for q in qids])
    right = picks_one == truth_one
    pair_ok = right.reshape(n, 2).all(axis=1)
    per_pattern: dict[str, float] = {}
    counts: dict[str, int] = {}
    for pattern in dict.fromkeys(patterns):  # first-seen order (the release's pattern order)
        mask = np.array([p == pattern for p in patterns])
        per_pattern[pattern] = 100.0 * float(pair_ok[mask].mean())
        counts[pattern] = int(mask.sum())
    return {
        "average": float(np.mean(list(per_pattern.values()))),
        "pairs": 100.0 * float(pair_ok.mean()),
        "statements": 100.0 * float(right.mean()),
        "per_pattern": per_pattern, "pattern_pairs": counts,
        "picks_image_one": picks_one, "pair_correct": pair_ok,
    }


def mmvp_budget(params: MMVPParams, data: MMVPData, budget: Budget) -> Budgeted:
    """The first N pairs of every pattern present (each pattern still scored on its own, then averaged)."""
    n = budget.eval_items
    keep = np.sort(np.concatenate([np.flatnonzero(np.array(data.patterns) == p)[:n]
                                   for p in dict.fromkeys(data.patterns)]))
    patterns = len(set(data.patterns))
    return Budgeted(params, take(data, keep), {
        "pairs": f"first {n} pairs of each of the {patterns} patterns: {len(keep)} of {data.n_pairs} pairs"})


def run_mmvp_vlm(model: Any, data: MMVPData, params: MMVPParams, ctx: RunContext) -> ProtocolResult:
    if not isinstance(data, MMVPData):
        raise ClBenchError(f"protocol 'mmvp_vlm' needs MMVP pairs (mmvp-vlm, scenes-mmvp), not {type(data).__name__}")
    scale = params.logit_scale if params.logit_scale is not None else model_logit_scale(model)
    if not math.isfinite(scale) or scale <= 0:
        raise ClBenchError(f"mmvp_vlm: the model's logit scale {scale} is not a positive number")
    image_emb = ctx.features(model, data.images)
    text_emb = ctx.features(model, TextSplit([params.prefix + s for s in data.statements]))
    s = mmvp_scores(image_emb=image_emb, text_emb=text_emb, qids=data.qids, patterns=data.patterns, scale=scale)
    result = ProtocolResult(
        metrics={"average": s["average"], "pairs": s["pairs"], "statements": s["statements"]},
        extras={"per_pattern": s["per_pattern"], "pattern_pairs": s["pattern_pairs"], "n_pairs": data.n_pairs,
                "chance": 25.0, "n_eval": int(data.n_pairs),  # a coin flip per statement: both right 1 in 4
                "logit_scale": scale, "prefix": params.prefix},
    )
    _attach_predictions(result, data, s)
    return result


def _attach_predictions(result: ProtocolResult, data: MMVPData, s: dict[str, Any]) -> None:
    """One row per pair: item = the pair's index; pred = 2-bit code of the two picks
    (bit 1: statement 1 picked image 1, bit 0: statement 2 picked image 1); target likewise."""
    picks = s["picks_image_one"].reshape(-1, 2).astype(int)
    truth = np.array([own_image(int(q)) == 0 for q in data.qids]).reshape(-1, 2).astype(int)
    result.predictions = Predictions(item=np.arange(data.n_pairs), pred=picks[:, 0] * 2 + picks[:, 1],
                                     correct=s["pair_correct"], target=truth[:, 0] * 2 + truth[:, 1])


register("protocol", "mmvp_vlm")(Protocol(
    name="mmvp_vlm", requires="image_text", params=MMVPParams, run=run_mmvp_vlm, data_kind="mmvp_pairs",
    budget=mmvp_budget,
))
