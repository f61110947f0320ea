"""Weighted kNN on L2-normalized features (the InstDisc / DINO protocol).

Each test item takes its ``k`` most cosine-similar training items (``k`` is clamped to the
training-set size); class ``c`` scores ``Σ exp(sim / T)`` over those neighbours of class ``c``.
Ties are broken deterministically: among equally similar training items the lower index is
the neighbour, and the selected neighbours' weights are summed in index order; class ties in
top-k go to the lower class index (see ``classification_metrics``).

Test items are processed ``chunk_size`` rows at a time, so memory is bounded by
``chunk_size × n_train`` similarities (plus the features themselves), whatever the test size.
When the training features do not fit on the device (:mod:`cl_bench.memory_budget`), the memory
bank is read from the feature cache in blocks instead (:func:`knn_predict_streamed`): the same
neighbours, the same scores up to float32 rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from cl_bench.budget import probe_budget
from cl_bench.components import register
from cl_bench.data.image.types import ImageClassificationData
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext
from cl_bench.protocols.linear_probe import classification_result

SIMILARITY_BUDGET = 1 << 25  # similarities held at once when chunk_size is automatic (128 MiB in float32)
MIN_TEMPERATURE = 1.0 / 80.0  # exp(1 / T) must stay far inside float32 (exp(80) ≈ 5.5e34)


class KnnParams(ProtocolParams):
    k: int = Field(20, ge=1)
    temperature: float = Field(0.07, ge=MIN_TEMPERATURE, allow_inf_nan=False)
    chunk_size: int | None = Field(None, ge=1)  # test rows per block; None: from SIMILARITY_BUDGET


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rows divided by their Euclidean norm (all-zero rows stay zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


def auto_chunk_size(n_train: int, budget: int = SIMILARITY_BUDGET) -> int:
    """Test rows per block so that a block's similarity matrix holds at most ``budget`` entries."""
    return max(1, budget // max(1, n_train))


def _nearest(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest entries per row (ties: lower column first), as (values, indices), each row
    sorted by column index."""
    n = sims.shape[1]
    vals, idx = torch.topk(sims, min(k + 1, n), dim=1)
    kth = vals[:, k - 1 : k]
    # the k-th value is shared beyond the top-k exactly when the (k+1)-th equals it
    tied = vals[:, k] == vals[:, k - 1] if k < n else torch.zeros(len(sims), dtype=torch.bool, device=sims.device)
    idx = idx[:, :k].contiguous()
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        s, t = sims[rows], kth[rows]
        eq = s == t
        need = k - (s > t).sum(1, keepdim=True)
        keep = (s > t) | (eq & (eq.cumsum(1) <= need))
        idx[rows] = keep.nonzero()[:, 1].view(len(rows), k)
    idx, _ = idx.sort(dim=1)
    return sims.gather(1, idx), idx


def knn_predict(
    train_feats: torch.Tensor | np.ndarray,
    train_labels: torch.Tensor | np.ndarray,
    test_feats: torch.Tensor | np.ndarray,
    k: int = 20,
    T: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Class scores [N_test, C]: Σ exp(cos / T) over each test item's k nearest training items.

    Features are L2-normalized here; computation happens on ``train_feats``' device in float32,
    so ``T`` must be at least ``MIN_TEMPERATURE`` (1/80).
    """
    if not T >= MIN_TEMPERATURE:
        raise ValueError(f"T={T} would overflow exp(sim / T) in float32; use T >= {MIN_TEMPERATURE}")
    train = l2_normalize(torch.as_tensor(train_feats).float())
    device = train.device
    labels = torch.as_tensor(train_labels, device=device).long()
    test = torch.as_tensor(test_feats).float().to(device)
    C = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    k = min(int(k), train.shape[0])
    chunk = chunk_size or auto_chunk_size(train.shape[0])
    scores = torch.zeros(test.shape[0], C, dtype=torch.float32, device=device)
    for start in range(0, test.shape[0], chunk):
        q = l2_normalize(test[start : start + chunk])
        sims, idx = _nearest(q @ train.T, k)
        weights = sims.div_(T).exp_()
        scores[start : start + chunk].scatter_add_(1, labels[idx], weights)
    return scores


def knn_predict_streamed(
    train: Any, train_labels: torch.Tensor | np.ndarray, test: Any, k: int = 20, T: float = 0.07,
    num_classes: int | None = None, device: torch.device | str = "cpu", bank_rows: int | None = None,
) -> torch.Tensor:
    """:func:`knn_predict` with the memory bank (``train``: anything with ``blocks(rows)`` and
    ``shape``, e.g. a feature-cache entry) read ``bank_rows`` rows at a time onto ``device``.

    Each test item keeps a running top-k over the blocks: the candidates (previous top-k, then the
    block's top-k, both in index order) are ordered by a stable descending sort, so equal
    similarities keep the lower index, exactly the neighbours :func:`knn_predict` picks.
    """
    if not T >= MIN_TEMPERATURE:
        raise ValueError(f"T={T} would overflow exp(sim / T) in float32; use T >= {MIN_TEMPERATURE}")
    device = torch.device(device)
    labels = torch.as_tensor(train_labels).long().to(device)
    q = l2_normalize(torch.as_tensor(np.asarray(test.load() if hasattr(test, "load") else test)).float().to(device))
    C = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    k = min(int(k), train.shape[0])
    rows = bank_rows or max(1, auto_chunk_size(len(q)))
    best_v = torch.empty(len(q), 0, device=device)
    best_i = torch.empty(len(q), 0, dtype=torch.long, device=device)
    for start, block in train.blocks(rows):
        bank = l2_normalize(torch.from_numpy(np.asarray(block, dtype=np.float32)).to(device))
        v, i = _nearest(q @ bank.T, min(k, len(bank)))
        cand_v, cand_i = torch.cat([best_v, v], 1), torch.cat([best_i, i + start], 1)
        order = torch.sort(cand_v, dim=1, descending=True, stable=True).indices[:, :k]
        keep_i, pos = cand_i.gather(1, order).sort(dim=1)
        best_v, best_i = cand_v.gather(1, order).gather(1, pos), keep_i
    scores = torch.zeros(len(q), C, dtype=torch.float32, device=device)
    return scores.scatter_add_(1, labels[best_i], best_v.div(T).exp_())


def _run(model: Any, data: ImageClassificationData, params: KnnParams, ctx: RunContext) -> ProtocolResult:
    from cl_bench.memory_budget import budget_bytes

    train_f = ctx.stored_features(model, data.train)
    test_f = ctx.stored_features(model, data.test)
    k = min(params.k, len(data.train.labels))
    if 2 * (train_f.nbytes + test_f.nbytes) <= budget_bytes(ctx.device):  # features and normalized copies
        train = torch.from_numpy(train_f.load()).to(ctx.device)
        test = torch.from_numpy(test_f.load()).to(ctx.device)
        scores = knn_predict(
            train, data.train.labels, test, params.k, params.temperature, data.num_classes, params.chunk_size
        )
        return classification_result(scores, data.test.labels, {"k_used": k})
    scores = knn_predict_streamed(train_f, data.train.labels, test_f, params.k, params.temperature,
                                  data.num_classes, ctx.device)
    return classification_result(scores, data.test.labels, {"k_used": k, "memory_bank": "streamed in blocks"})


PROTOCOL = register("protocol", "knn")(Protocol(name="knn", requires="image_encoder", params=KnnParams, run=_run,
                                                         budget=probe_budget))
