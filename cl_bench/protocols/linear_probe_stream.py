"""The linear probe on features that do not fit in memory: the same objective, streamed.

:mod:`cl_bench.protocols.linear_probe_solver` fits full-batch L-BFGS on standardized features held on
the device. When those would not fit (:func:`full_batch_bytes` against
:func:`cl_bench.memory_budget.budget_bytes`), the probe switches to this solver, which is
still *full-batch* L-BFGS on the *same objective* (``mean CE + λ·||W||²`` over the same fit
rows, same preconditioner, same warm-started λ search, same stopping rule): every evaluation of
the objective reads the features block by block from the cache entry, standardizes each block
(in float32) with μ, σ from a streamed float64 pass, and sums loss and gradient over the blocks. No standardized or
float64 copy of the whole matrix exists; memory is one block plus the weights. Only the
order of floating-point summation differs from the in-memory solver, so both give the same λ
and the same predictions up to float32 rounding (``tests/protocols/test_protocols_streamed.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from cl_bench.data.splits import stratified_split
from cl_bench.errors import ClBenchError
from cl_bench.protocols.linear_probe_solver import (
    LinearProbeParams,
    column_stats,
    initial_weights,
    minimize,
    scale_from_moment,
    search_l2,
    sklearn_c,
    topk_correct,
)

BLOCK_BYTES = 128 << 20  # float32 bytes of one block of standardized rows


def full_batch_bytes(n_train: int, n_test: int, dim: int, classes: int, device_type: str = "cpu") -> tuple[int, int]:
    """(device bytes, host bytes) the full-batch probe holds at its peak. The host loads and
    standardizes the features (two float32 copies); the device holds the standardized features,
    the fit/validation copies of train and three [n, C] float32 buffers of an evaluation. On the
    CPU both are the same memory."""
    host = 4 * dim * 2 * (n_train + n_test)
    device = 4 * (dim * (2 * n_train + n_test) + 3 * classes * n_train)
    return (host + device, host + device) if device_type == "cpu" else (device, host)


class StandardizedRows:
    """Rows ``rows`` (sorted; None = all) of ``feats``, standardized, block by block on ``device``."""

    def __init__(self, feats: Any, rows: np.ndarray | None, labels: np.ndarray, mean: np.ndarray,
                 std: np.ndarray, device: torch.device, block_rows: int) -> None:
        self.feats, self.rows = feats, rows
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)  # blocks standardize in float32
        self.labels = np.asarray(labels, dtype=np.int64)
        self.device, self.block_rows = device, block_rows
        self.n = len(feats) if rows is None else len(rows)
        picked = self.labels if rows is None else self.labels[rows]
        self.y = torch.from_numpy(picked).to(device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        done = 0
        for start, block in self.feats.blocks(self.block_rows):
            if self.rows is None:
                sel = slice(None)
            else:
                sel = self.rows[(self.rows >= start) & (self.rows < start + len(block))] - start
                if not len(sel):
                    continue
            x = np.subtract(block[sel], self.mean, dtype=np.float32)
            x /= self.std
            yield torch.from_numpy(x).to(self.device), self.y[done : done + len(x)]
            done += len(x)

    def second_moment(self) -> torch.Tensor:
        """mean(x_d²) per feature over these rows, float64 (what :func:`weight_scale` needs)."""
        total = None
        for x, _ in self:
            part = x.double().pow(2).sum(0)
            total = part if total is None else total + part
        assert total is not None
        return total / self.n


def _block_terms(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Σ CE over the block (float64), and Σ of its gradients with respect to W and b."""
    logits = torch.addmm(b, X, W)
    rows = torch.arange(len(X), device=X.device)
    picked = logits[rows, y].sum(dtype=torch.float64)
    top = logits.amax(dim=1, keepdim=True)
    probs = logits.sub_(top).exp_()
    norm = probs.sum(dim=1, keepdim=True)
    loss = norm.log().sum(dtype=torch.float64) + top.sum(dtype=torch.float64) - picked
    resid = probs.div_(norm)
    resid[rows, y] -= 1.0
    return loss, X.T @ resid, resid.sum(0)


def fit_streamed(data: StandardizedRows, l2: float, num_classes: int, max_iter: int = 1000, tol: float = 1e-6,
                 init: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fit_logistic`'s objective and solver, the data term summed over streamed blocks."""
    dim = data.feats.shape[1]
    scale = scale_from_moment(data.second_moment(), l2, num_classes).to(torch.float32)[:, None]
    W, b = initial_weights(data.y, num_classes, dim, torch.float32, data.device, init)

    def objective(W_: torch.Tensor, b_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss = torch.zeros((), dtype=torch.float64, device=data.device)
        gW, gb = torch.zeros_like(W_), torch.zeros_like(b_)
        for X, y in data:
            part, pW, pb = _block_terms(X, y, W_, b_)
            loss, gW, gb = loss + part, gW.add_(pW), gb.add_(pb)
        loss = loss / data.n + l2 * W_.pow(2).sum(dtype=torch.float64)
        return loss, gW.div_(data.n).add_(W_, alpha=2.0 * l2), gb.div_(data.n)

    return minimize(objective, scale, W, b, max_iter, tol)


def scores_streamed(data: StandardizedRows, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Class scores [n, C] of the rows, on the CPU."""
    return torch.cat([torch.addmm(b, X, W).cpu() for X, _ in data])


def streamed_probe_scores(
    train: Any, train_labels: np.ndarray, test: Any, num_classes: int, params: LinearProbeParams,
    seed: int, device: torch.device | str = "cpu", block_rows: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """:func:`linear_probe_scores` for feature sources read in blocks (``StoredFeatures``)."""
    device = torch.device(device)
    labels = np.asarray(train_labels, dtype=np.int64)
    rows_per_block = block_rows or max(1, BLOCK_BYTES // (4 * train.shape[1]))
    mean, std = column_stats(lambda: (blk for _, blk in train.blocks(rows_per_block)))

    def part(feats: Any, rows: np.ndarray | None, lab: np.ndarray) -> StandardizedRows:
        return StandardizedRows(feats, rows, lab, mean, std, device, rows_per_block)

    grid = sorted({float(v) for v in params.l2_grid}, reverse=True)
    extras: dict[str, Any] = {"objective": "mean CE + l2*||W||^2; sklearn C = 1/(2*l2*n_train)"}
    init = None
    if len(grid) > 1:
        fit_idx, val_idx = stratified_split(labels, params.val_fraction, seed)
        if len(val_idx) == 0 or len(fit_idx) == 0:
            raise ClBenchError(
                f"linear_probe: val_fraction={params.val_fraction} leaves an empty fit or validation "
                f"part of {len(labels)} training items; use a val_fraction nearer 0.2 or a single l2_grid value"
            )
        fit_rows, val_rows = part(train, fit_idx, labels), part(train, val_idx, labels)

        def val_accuracy(W: torch.Tensor, b: torch.Tensor) -> float:
            return float(topk_correct(scores_streamed(val_rows, W, b), val_rows.y.cpu(), 1).mean())

        best, val_acc, init = search_l2(
            lambda l2, w0: fit_streamed(fit_rows, l2, num_classes, params.max_iter, params.tol, w0),
            val_accuracy, grid,
        )
        extras["val_top1"] = {repr(k): v * 100.0 for k, v in val_acc.items()}
        extras["val_size"] = len(val_idx)
    else:
        best = grid[0]
    W, b = fit_streamed(part(train, None, labels), best, num_classes, params.max_iter, params.tol, init)
    extras["l2"] = best
    extras["sklearn_C"] = sklearn_c(best, len(labels))
    extras["solver"] = f"L-BFGS, streamed: {rows_per_block} rows per block"
    return scores_streamed(part(test, None, np.zeros(len(test), np.int64)), W, b), extras
