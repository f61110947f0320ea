"""MMEB scoring (protocol ``mmeb``), as VLM2Vec v1's ``eval.py`` / ``evaluation/eval_clip.py`` do it.

Per dataset: every unique (text, image path) item of the query side and of the candidate side
is embedded once (``model.embed_pairs``: text, image or both — the two-tower default is the
normalised sum, as VLM2Vec scores CLIP baselines); each row looks its query and its candidates
up by (text, path) and ``get_pred`` picks a candidate: scores = cosine (``normalize: true``,
VLM2Vec's ``--normalize True``: ``tgt @ q / (|tgt| * |q|)`` in float32) or the dot product, and
``pred = np.argmax(scores)`` — the FIRST maximum, so a tie with the answer (index 0) counts as
right, and an all-NaN row (a zero embedding) predicts 0 as well. A row is right iff pred == 0.

Metrics (percent): ``overall`` = unweighted mean of the per-dataset Precision@1; one unweighted
mean per meta-task (``classification``, ``vqa``, ``retrieval``, ``grounding``) and per split
(``ind``, ``ood``) — each only when the task has datasets of that group.
``extras["per_dataset"]`` = {dataset: Precision@1}; ``extras["datasets"]`` = their meta-task,
split, rows and candidates.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from pydantic import Field

from cl_bench.budget import Budget, Budgeted, first
from cl_bench.components import register
from cl_bench.data.image_text.mmeb import META_TASKS, SPLITS, MMEBData, MMEBDataset, PairItems
from cl_bench.data.subsets import take
from cl_bench.errors import ClBenchError
from cl_bench.predictions import Predictions
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext


class MMEBProtocolParams(ProtocolParams):
    normalize: bool = True  # cosine (VLM2Vec --normalize True) or dot product
    batch_size: int = Field(default=64, ge=1)  # items per embed_pairs call


def get_pred(qry: np.ndarray, tgt: np.ndarray, normalize: bool) -> int:
    """VLM2Vec's ``evaluation/eval_utils.get_pred``: argmax (first maximum) of the candidates'
    cosine (or dot product) with the query, in the embeddings' own float precision."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if normalize:
            scores = np.dot(tgt, qry) / (np.linalg.norm(tgt, axis=1) * np.linalg.norm(qry))
        else:
            scores = np.dot(tgt, qry)
    return int(np.argmax(scores))


def embed_items(model: Any, items: PairItems, ctx: RunContext, batch_size: int) -> np.ndarray:
    """[N, D] float32 embeddings of ``items``: through the feature cache when the model's
    ``embed_split`` takes PairItems (``embeds_pair_items``), else ``embed_pairs`` in batches."""
    if getattr(model, "embeds_pair_items", False):
        return np.asarray(ctx.features(model, items), dtype=np.float32)
    model.eval()
    out: list[torch.Tensor] = []
    with torch.no_grad():
        for texts, images in items.batches(batch_size):
            imgs = [None if im is None else im.to(ctx.device) for im in images]
            out.append(model.embed_pairs(texts, imgs, role=items.role).float().cpu())
    if not out:
        raise ClBenchError("mmeb: nothing to embed")
    return torch.cat(out).numpy()


def score_rows(ds: MMEBDataset, qry_emb: np.ndarray, qry_rows: dict[tuple[str, str], int], tgt_emb: np.ndarray,
               tgt_rows: dict[tuple[str, str], int], normalize: bool) -> np.ndarray:
    """The predicted candidate index of every row of ``ds``."""
    preds = np.zeros(len(ds), dtype=np.int64)
    for i in range(len(ds)):
        q = qry_emb[qry_rows[(ds.qry_text[i], ds.qry_img[i])]]
        t = tgt_emb[[tgt_rows[(a, b)] for a, b in zip(ds.tgt_text[i], ds.tgt_img[i])]]
        preds[i] = get_pred(q, t, normalize)
    return preds


def group_means(per_dataset: dict[str, float], datasets: list[MMEBDataset]) -> dict[str, float]:
    """``overall`` and the unweighted means per meta-task and per split (groups with datasets)."""
    out = {"overall": float(np.mean(list(per_dataset.values())))}
    for key, values in [(m, [d for d in datasets if d.meta_task == m]) for m in META_TASKS] + \
                       [(s.lower(), [d for d in datasets if d.split == s]) for s in SPLITS]:
        if values:
            out[key] = float(np.mean([per_dataset[d.name] for d in values]))
    return out


def mmeb_budget(params: MMEBProtocolParams, data: MMEBData, budget: Budget) -> Budgeted:
    """The first N rows of every dataset present (each still scored and aggregated as the 36 are)."""
    datasets = [take(ds, first(len(ds), budget.eval_items)) for ds in data.datasets]
    kept, total = sum(len(d) for d in datasets), sum(len(d) for d in data.datasets)
    return Budgeted(params, dataclasses.replace(data, datasets=datasets), {
        "rows": f"first {budget.eval_items} rows of each of the {len(datasets)} datasets: {kept} of {total} rows"})


def run_mmeb(model: Any, data: MMEBData, params: MMEBProtocolParams, ctx: RunContext) -> ProtocolResult:
    if not isinstance(data, MMEBData):
        raise ClBenchError(f"protocol 'mmeb' needs MMEB data (mmeb, scenes-mmeb-mini), not {type(data).__name__}")
    per_dataset: dict[str, float] = {}
    info: dict[str, dict[str, Any]] = {}
    items, preds_all = [], []
    for ds in data.datasets:
        qry_items, qry_rows = ds.pair_items("qry")
        tgt_items, tgt_rows = ds.pair_items("tgt")
        qry_emb = embed_items(model, qry_items, ctx, params.batch_size)
        tgt_emb = embed_items(model, tgt_items, ctx, params.batch_size)
        preds = score_rows(ds, qry_emb, qry_rows, tgt_emb, tgt_rows, params.normalize)
        per_dataset[ds.name] = 100.0 * float((preds == 0).mean())
        info[ds.name] = {"meta_task": ds.meta_task, "split": ds.split, "n_rows": len(ds),
                         "n_correct": int((preds == 0).sum()),
                         "mean_candidates": float(np.mean([len(t) for t in ds.tgt_text]))}
        items += [f"{ds.name}:{i}" for i in range(len(ds))]
        preds_all.append(preds)
    result = ProtocolResult(metrics=group_means(per_dataset, data.datasets),
                            extras={"per_dataset": per_dataset, "datasets": info, "normalize": params.normalize,
                                    # the sanity gate's chance level: a uniform guess per dataset, averaged
                                    "chance": float(np.mean([100.0 / v["mean_candidates"] for v in info.values()])),
                                    "n_eval": int(sum(v["n_rows"] for v in info.values()))})
    pred = np.concatenate(preds_all)
    result.predictions = Predictions(item=np.array(items), pred=pred, correct=pred == 0, target=np.zeros_like(pred))
    return result


register("protocol", "mmeb")(Protocol(
    name="mmeb", requires="image_text", params=MMEBProtocolParams, run=run_mmeb, data_kind="mmeb",
    budget=mmeb_budget,
))
