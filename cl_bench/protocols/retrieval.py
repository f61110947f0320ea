"""Image–text retrieval (protocol ``retrieval``): Recall@K in both directions, several captions
per image, as COCO / Flickr30k Karpathy-split evaluations (and LAION's CLIP_benchmark) do.

- text→image (``t2i_r{K}``): each caption has one image; a hit if that image is among the K
  most similar images.
- image→text (``i2t_r{K}``): each image has >= 1 captions; a hit if ANY of its captions is
  among the K most similar captions (the rank of its best-ranked caption is < K).
- ``rsum`` = the sum of the six recalls (K = 1, 5, 10), ``mean_recall`` = rsum / 6; all in %.

Similarity is the dot product of the L2-normalised embeddings (cosine).

Ranks, exactly and in bounded memory. The rank of a query's positive is the number of other
candidates that come before it when candidates are sorted by decreasing similarity, ties
(bitwise-equal float32 similarities) broken by the lower candidate index: the order a stable
sort of -score gives, and what ``torch.topk`` gives whenever there are no ties. For images
the candidates are the captions ordered by (image index, caption index) — the caption order
itself in COCO/Flickr/scenes data, where an image's captions are consecutive — and the other
captions of the same image do not count. The rank is counted, not searched: for a query q
with positive score g, rank = #{j < pos: s_qj >= g} + #{j > pos: s_qj > g}, i.e. one
comparison per similarity against g or against the next float above g. Similarities are
computed tile by tile (``block_size`` captions × ``block_size`` images; a tile's values are
bitwise reproducible because every tile is computed by the same call on the same slices),
so memory is O(block_size²) for any N — never the full N×M matrix — and the tiles are computed
on the run's device (a GPU when there is one). A first pass computes only
the tiles that hold positive pairs (about one per caption block) to get each query's g.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from pydantic import Field, field_validator

from cl_bench.budget import first_test
from cl_bench.components import register
from cl_bench.data.image_text.types import CaptionedImageData, CaptionedImages
from cl_bench.errors import ClBenchError
from cl_bench.predictions import Predictions
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext


class RetrievalParams(ProtocolParams):
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    block_size: int = Field(default=1024, ge=16)  # tile side: memory and speed, never numbers

    @field_validator("ks")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(k < 1 for k in v) or len(set(v)) != len(v):
            raise ValueError("ks must be distinct positive integers")
        return sorted(v)


def _next_up(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x, torch.full_like(x, float("inf")))


def _as_float_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)) if isinstance(x, np.ndarray) else x.float()


class Ranked(NamedTuple):
    """Ranks (0-based) and top-1 retrievals of both directions; caption indices are the input's."""

    t2i: np.ndarray  # [captions] rank of the caption's image among all images
    i2t: np.ndarray  # [images] rank of the image's best caption among the captions of other images
    t2i_top1: np.ndarray  # [captions] the first image in the caption's ranking
    i2t_top1: np.ndarray  # [images] the first caption in the image's ranking (own captions included)
    i2t_best: np.ndarray  # [images] the image's best (highest-scoring, then first) own caption


def retrieval_ranks(
    text_emb: np.ndarray | torch.Tensor,
    image_emb: np.ndarray | torch.Tensor,
    owner: np.ndarray,
    block_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each caption's image among all images, rank of each image's best caption among
    the captions of other images), 0-based, ties as described in the module docstring."""
    r = rank_and_retrieve(text_emb, image_emb, owner, block_size)
    return r.t2i, r.i2t


def rank_and_retrieve(
    text_emb: np.ndarray | torch.Tensor,
    image_emb: np.ndarray | torch.Tensor,
    owner: np.ndarray,
    block_size: int = 1024,
    device: torch.device | str = "cpu",
) -> Ranked:
    """:func:`retrieval_ranks` plus each query's top-1 candidate, in the same order (ties: the
    lower candidate index), from the same tiles: rank 0 exactly when the top-1 is the positive
    (the caption's image; for an image, its best caption). Tiles are computed on ``device``."""
    dev = torch.device(device)
    T, I = _as_float_tensor(text_emb).to(dev), _as_float_tensor(image_emb).to(dev)
    owner = np.asarray(owner, dtype=np.int64)
    n_t, n_i = len(T), len(I)
    if T.ndim != 2 or I.ndim != 2 or T.shape[1] != I.shape[1]:
        raise ClBenchError("text and image embeddings must be [N, D] with one D; "
                           f"got {tuple(T.shape)} and {tuple(I.shape)}")
    if owner.shape != (n_t,) or (n_t and (owner.min() < 0 or owner.max() >= n_i)):
        raise ClBenchError(f"need one image index in 0..{n_i - 1} for each of the {n_t} captions")
    if n_i == 0 or n_t == 0:
        raise ClBenchError("retrieval needs at least one image and one caption")
    if np.bincount(owner, minlength=n_i).min() == 0:
        raise ClBenchError("every image needs at least one caption for image→text retrieval")
    if not (torch.isfinite(T).all() and torch.isfinite(I).all()):
        raise ClBenchError("embeddings contain NaN or inf: the model's outputs are broken")

    order = np.argsort(owner, kind="stable")  # captions grouped by image (a no-op for COCO order)
    T = T[torch.from_numpy(order).to(dev)].contiguous()
    own = torch.from_numpy(owner[order]).to(dev)
    b = int(block_size)
    row_blocks = [(r, min(r + b, n_t)) for r in range(0, n_t, b)]
    col_blocks = [(c, min(c + b, n_i)) for c in range(0, n_i, b)]

    def tile(r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        return T[r0:r1] @ I[c0:c1].T

    def diagonal(r0: int, r1: int) -> list[tuple[int, int]]:
        lo, hi = int(own[r0]), int(own[r1 - 1])  # owners are sorted
        return [(c0, c1) for c0, c1 in col_blocks if c0 <= hi and c1 > lo]

    # pass 1: each caption's score with its own image, from the tile that pass 2 recomputes
    gold_t = torch.empty(n_t, device=dev)
    for r0, r1 in row_blocks:
        for c0, c1 in diagonal(r0, r1):
            rows = torch.nonzero((own[r0:r1] >= c0) & (own[r0:r1] < c1)).flatten()
            s = tile(r0, r1, c0, c1)
            gold_t[r0 + rows] = s[rows, own[r0 + rows] - c0]
    # each image's best caption: highest score, then the first position
    gold_i = torch.full((n_i,), -float("inf"), device=dev).scatter_reduce(0, own, gold_t, "amax")
    pos = torch.arange(n_t, device=dev)
    is_best = gold_t == gold_i[own]
    best_pos = torch.full((n_i,), n_t, dtype=torch.long, device=dev).scatter_reduce(
        0, own[is_best], pos[is_best], "amin")

    # pass 2: count who comes before each positive, tile by tile
    thr_t_up = _next_up(gold_t)
    thr_i_up = _next_up(gold_i)
    rank_t = torch.zeros(n_t, dtype=torch.long, device=dev)
    rank_i = torch.zeros(n_i, dtype=torch.long, device=dev)
    # running top-1 of every caption (over images) and image (over caption positions); tiles come
    # in increasing candidate order and only a strictly larger score replaces: the first maximum
    top_t, top_t_val = torch.zeros(n_t, dtype=torch.long, device=dev), torch.full((n_t,), -float("inf"), device=dev)
    top_i, top_i_val = torch.zeros(n_i, dtype=torch.long, device=dev), torch.full((n_i,), -float("inf"), device=dev)
    for r0, r1 in row_blocks:
        o = own[r0:r1]
        diag = set(diagonal(r0, r1))
        for c0, c1 in col_blocks:
            s = tile(r0, r1, c0, c1)
            v, j = s.max(dim=1)  # first maximum within the tile
            better = v > top_t_val[r0:r1]
            top_t_val[r0:r1] = torch.where(better, v, top_t_val[r0:r1])
            top_t[r0:r1] = torch.where(better, j + c0, top_t[r0:r1])
            v, j = s.max(dim=0)
            better = v > top_i_val[c0:c1]
            top_i_val[c0:c1] = torch.where(better, v, top_i_val[c0:c1])
            top_i[c0:c1] = torch.where(better, j + r0, top_i[c0:c1])
            if (c0, c1) not in diag:
                # text rows: images before the row's own image compare with >=, after with >
                thr_r = torch.where(o >= c1, gold_t[r0:r1], thr_t_up[r0:r1])
                rank_t[r0:r1] += (s >= thr_r[:, None]).sum(1)
                # image columns: captions before the image's best caption >=, after >
                # (off the diagonal the whole block lies before, or after, every best caption)
                thr_c = gold_i[c0:c1] if r1 <= int(best_pos[c0]) else thr_i_up[c0:c1]
                rank_i[c0:c1] += (s >= thr_c[None, :]).sum(0)
                continue
            cols = torch.arange(c0, c1, device=dev)
            positive = o[:, None] == cols[None, :]
            thr_r = torch.where(cols[None, :] < o[:, None], gold_t[r0:r1, None], thr_t_up[r0:r1, None])
            rank_t[r0:r1] += ((s >= thr_r) & ~positive).sum(1)
            before = torch.arange(r0, r1, device=dev)[:, None] < best_pos[None, c0:c1]
            thr_c = torch.where(before, gold_i[None, c0:c1], thr_i_up[None, c0:c1])
            rank_i[c0:c1] += ((s >= thr_c) & ~positive).sum(0)
    t2i = np.empty(n_t, np.int64)
    t2i[order] = rank_t.cpu().numpy()
    t2i_top1 = np.empty(n_t, np.int64)
    t2i_top1[order] = top_t.cpu().numpy()
    return Ranked(t2i, rank_i.cpu().numpy(), t2i_top1, order[top_i.cpu().numpy()], order[best_pos.cpu().numpy()])


def recalls(t2i_rank: np.ndarray, i2t_rank: np.ndarray, ks: list[int]) -> dict[str, float]:
    """Recall@K (%) in both directions, plus rsum and mean_recall over every (direction, K)."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_r{k}"] = float(100.0 * np.mean(i2t_rank < k))
        out[f"t2i_r{k}"] = float(100.0 * np.mean(t2i_rank < k))
    out["rsum"] = float(sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks))
    out["mean_recall"] = out["rsum"] / (2 * len(ks))
    return out


def run_retrieval(model: Any, data: Any, params: RetrievalParams, ctx: RunContext) -> ProtocolResult:
    split = data.test if isinstance(data, CaptionedImageData) else data
    if not isinstance(split, CaptionedImages):
        raise ClBenchError(
            f"protocol retrieval needs captioned images (e.g. dataset scenes-captions or coco-captions), "
            f"got {type(data).__name__}")
    texts, owner = split.caption_texts()
    image_emb = ctx.features(model, split.images)
    text_emb = ctx.features(model, texts)
    if len(image_emb) != len(split) or len(text_emb) != len(texts):
        raise ClBenchError(f"the model gave {len(image_emb)} image / {len(text_emb)} text embeddings for "
                           f"{len(split)} images / {len(texts)} captions")
    ranked = rank_and_retrieve(_unit(text_emb), _unit(image_emb), owner, params.block_size, ctx.device)
    t2i, i2t = ranked.t2i, ranked.i2t
    metrics = recalls(t2i, i2t, params.ks)
    extras = {
        "n_images": len(split), "n_captions": len(texts),
        "t2i_median_rank": float(np.median(t2i) + 1), "i2t_median_rank": float(np.median(i2t) + 1),
        "t2i_mean_rank": float(t2i.mean() + 1), "i2t_mean_rank": float(i2t.mean() + 1),
        "ties": "equal similarities ordered by lower candidate index (stable sort of -score)",
        "predictions_of": "R@1 verdicts, image->text and text->image rows together",
    }
    return ProtocolResult(metrics=metrics, extras=extras, predictions=retrieval_predictions(ranked, owner))


def retrieval_predictions(ranked: Ranked, owner: np.ndarray) -> Predictions:
    """One row per image ("i2t:<image>") and per caption ("t2i:<caption>"): pred = the top-1
    candidate, target = the positive (a caption's image; an image's best own caption), correct =
    the R@1 verdict (rank < 1), so 100 * mean(correct) over each direction's rows is ``i2t_r1`` /
    ``t2i_r1`` whatever ``ks`` is; ``clbench diff`` pools both directions' rows."""
    n_i, n_t = len(ranked.i2t), len(ranked.t2i)
    items = [f"i2t:{i}" for i in range(n_i)] + [f"t2i:{t}" for t in range(n_t)]
    return Predictions(
        item=np.array(items),
        pred=np.concatenate([ranked.i2t_top1, ranked.t2i_top1]),
        correct=np.concatenate([ranked.i2t < 1, ranked.t2i < 1]),
        target=np.concatenate([ranked.i2t_best, np.asarray(owner, dtype=np.int64)]),
    )


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


register("protocol", "retrieval")(Protocol(
    "retrieval", requires="image_text", params=RetrievalParams, run=run_retrieval, data_kind="captioned_images",
    budget=first_test("test images (with their captions)")))
