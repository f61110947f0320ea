"""Linear probe: multinomial logistic regression on frozen, standardized features.

Objective, for features ``X`` [n, D], labels ``y`` and strength ``λ`` (``l2``)::

    mean_i CE(softmax(X_i W + b), y_i) + λ · ||W||²        (the bias b is not penalised)

This is scikit-learn's ``LogisticRegression(C=C)`` objective (``C · Σ_i CE + ½ ||W||²``)
divided by ``C · n``, so the two have the same minimiser when ``C = 1 / (2 λ n)``
(:func:`sklearn_c`). It is minimised by full-batch L-BFGS (``torch.optim.LBFGS``, strong-Wolfe
line search) with an analytic gradient, in the features' dtype (float32 in the protocol) with the
objective summed in float64, so the line search still sees progress near the optimum. It stops
when the largest gradient entry is below ``tol`` (default 1e-6, as scikit-learn's ``tol``; its
own default 1e-4 stops weakly regularised fits early enough that warm- and cold-started fits
pick different λ).

Protocol: standardize with train mean/std (computed a block of rows at a time, bit for bit
numpy's ``mean``/``std``); split train (stratified, ``ctx.seed``) into a fit
part and a ``val_fraction`` validation part; fit every λ of ``l2_grid`` on the fit part, from
strong to weak regularisation, each warm-started from the previous solution; keep the λ with
the best validation accuracy (ties: the larger λ); refit on all of train (warm-started);
report top-1 (and top-5 when there are more than 5 classes) on test, in percent.

When the features would not fit in memory on the device, the same objective is minimised by the
same L-BFGS with the data term streamed block by block from the feature cache
(:mod:`cl_bench.protocols.linear_probe_stream`); ``extras["solver"]`` says which ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Annotated, Any, Iterator

import numpy as np
import torch
from pydantic import Field

from cl_bench.budget import probe_budget
from cl_bench.components import register
from cl_bench.data.splits import stratified_split
from cl_bench.data.image.types import ImageClassificationData
from cl_bench.errors import ClBenchError
from cl_bench.predictions import Predictions
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext

_TOL_CHANGE = 1e-12  # L-BFGS also stops when the objective or the step changes less than this
DEFAULT_L2_GRID: list[float] = [float(10.0**e) for e in range(-6, 3)]  # 1e-6 … 1e2, 9 points


class LinearProbeParams(ProtocolParams):
    l2_grid: list[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]] = Field(
        default_factory=lambda: list(DEFAULT_L2_GRID), min_length=1
    )
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    max_iter: int = Field(1000, ge=1)
    tol: float = Field(1e-6, gt=0.0)


def sklearn_c(l2: float, n: int) -> float:
    """scikit-learn's ``C`` with the same minimiser as our ``λ = l2`` on ``n`` training items."""
    return 1.0 / (2.0 * l2 * n)


def column_stats(blocks: Callable[[], Iterable[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(μ, σ) per column, float64, over the row blocks ``blocks()`` yields (called twice: a pass
    for μ, a pass for σ). Rows are summed one after another in float64, the order numpy's
    ``mean(axis=0)`` / ``std(axis=0)`` sum them in, so the result is theirs bit for bit while
    never holding more than one block in float64; σ = 1 where a feature is constant."""
    def running_sum(parts: Iterable[np.ndarray]) -> tuple[np.ndarray | None, int]:
        acc, n = None, 0
        for part in parts:
            acc = part.sum(axis=0) if acc is None else np.add.reduce(np.concatenate([acc[None], part]), axis=0)
            n += len(part)
        return acc, n

    total, n = running_sum(np.asarray(b, dtype=np.float64) for b in blocks())
    if total is None or n == 0:
        raise ClBenchError("linear_probe: no training features to standardize")
    mean = total / n
    sq, _ = running_sum((np.asarray(b, dtype=np.float64) - mean) ** 2 for b in blocks())
    std = np.sqrt(sq / n)
    std[std < 1e-12 * max(1.0, float(np.abs(mean).max(initial=0.0)))] = 1.0
    return mean, std


def standardized(a: np.ndarray, mean: np.ndarray, std: np.ndarray, block_rows: int = 8192) -> np.ndarray:
    """``((a - μ) / σ)`` as float32, computed a block of rows at a time (no float64 copy of ``a``)."""
    out = np.empty(a.shape, dtype=np.float32)
    for i in range(0, len(a), block_rows):
        out[i : i + block_rows] = (a[i : i + block_rows] - mean) / std
    return out


def standardize(train: np.ndarray, test: np.ndarray, block_rows: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(train - μ) / σ and (test - μ) / σ with μ, σ of ``train`` (σ = 1 where a feature is constant)."""
    mean, std = column_stats(lambda: (train[i : i + block_rows] for i in range(0, len(train), block_rows)))
    return standardized(train, mean, std, block_rows), standardized(test, mean, std, block_rows)


def _softmax_loss_grad(
    X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, l2: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Objective value and its gradients with respect to W and b."""
    n = X.shape[0]
    logits = torch.addmm(b, X, W)
    rows = torch.arange(n, device=X.device)
    picked = logits[rows, y].sum(dtype=torch.float64)
    top = logits.amax(dim=1, keepdim=True)
    probs = logits.sub_(top).exp_()  # in place of the logits: one exp pass gives loss and softmax
    norm = probs.sum(dim=1, keepdim=True)
    loss = (norm.log().sum(dtype=torch.float64) + top.sum(dtype=torch.float64) - picked) / n + l2 * W.pow(2).sum(
        dtype=torch.float64
    )
    resid = probs.div_(norm * n)
    resid[rows, y] -= 1.0 / n
    gW = torch.addmm(W, X.T, resid, beta=2.0 * l2)
    return loss, gW, resid.sum(0)


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat float32 denormals as zero inside the block (restored after). Weakly regularised fits
    drive many softmax probabilities into the denormal range, where every multiply is ~100x
    slower on x86; as zeros they change nothing a top-1 accuracy can see."""
    supported = torch.set_flush_denormal(True)  # False where the CPU cannot (then nothing changes)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


def weight_scale(X: torch.Tensor, l2: float, num_classes: int) -> torch.Tensor:
    """Diagonal preconditioner: the solver works on V with W = scale[:, None] * V.

    ``scale_d = sqrt(q / (q·mean(x_d²) + 2λ))`` with ``q = (1/C)(1 - 1/C)``, the softmax
    curvature at uniform probabilities, equalises the curvature of W's rows (data term plus
    penalty) with the bias's. Without it, strong λ (large penalty curvature next to a weakly
    curved, unpenalised bias) takes L-BFGS hundreds of iterations; on standardized features
    with small λ it is ~1, i.e. no change.
    """
    m = torch.linalg.vector_norm(X, dim=0, dtype=torch.float64).pow(2) / X.shape[0]
    return scale_from_moment(m, l2, num_classes).to(X.dtype)


def scale_from_moment(m: torch.Tensor, l2: float, num_classes: int) -> torch.Tensor:
    """:func:`weight_scale` from the per-feature second moments ``m`` (float64)."""
    q = (1.0 / num_classes) * (1.0 - 1.0 / num_classes)
    return torch.sqrt(q / (q * m + 2.0 * l2))


def initial_weights(
    y: torch.Tensor, num_classes: int, dim: int, dtype: torch.dtype, device: torch.device,
    init: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``init`` on the device, or the cold start W = 0, b = log class frequencies."""
    if init is not None:
        return init[0].detach().to(device, dtype), init[1].detach().to(device, dtype).clone()
    counts = torch.bincount(y, minlength=num_classes).to(dtype)
    return torch.zeros(dim, num_classes, dtype=dtype, device=device), torch.log((counts + 0.5) / (len(y) + 0.5 * num_classes))


def minimize(
    objective: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    scale: torch.Tensor, W: torch.Tensor, b: torch.Tensor, max_iter: int, tol: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L-BFGS (strong Wolfe) on (V = W / scale, b) given ``objective(W, b) -> (loss, dW, db)``."""
    V = (W / scale).requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [V, b], lr=1.0, max_iter=max_iter, max_eval=max_iter * 5 // 4 + 20, tolerance_grad=tol,
        tolerance_change=_TOL_CHANGE, history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        with torch.no_grad():
            loss, gW, gb = objective(V * scale, b)
        V.grad, b.grad = gW.mul_(scale), gb
        return loss

    with flush_denormals():
        opt.step(closure)
    return (V.detach() * scale), b.detach()


def fit_logistic(
    X: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    l2: float,
    num_classes: int | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``mean CE + l2·||W||²`` by L-BFGS; returns (W [D, C], b [C]) in X's dtype/device.

    Stops when the largest entry of the gradient with respect to (V, b) is below ``tol``
    (V = W / :func:`weight_scale`, so for standardized features and small λ this is W's
    gradient), after ``max_iter`` iterations, or when the objective stops changing. ``init``
    warm-starts from a previous (W, b); a cold start is W = 0, b = log class frequencies (the
    optimum for W = 0). ``num_classes`` defaults to ``max(y) + 1``.
    """
    X = torch.as_tensor(X)
    y = torch.as_tensor(y, device=X.device).long()
    C = int(num_classes if num_classes is not None else int(y.max()) + 1)
    scale = weight_scale(X, l2, C)[:, None]
    W, b = initial_weights(y, C, X.shape[1], X.dtype, X.device, init)
    return minimize(lambda W_, b_: _softmax_loss_grad(X, y, W_, b_, l2), scale, W, b, max_iter, tol)


def topk_correct(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, k: int) -> np.ndarray:
    """Per item: is the true class among the ``k`` best scores? Ties go to the lower class index.

    The rank of the true class is (#classes scoring higher) + (#lower-index classes scoring
    the same), so the answer is deterministic and matches a stable descending sort.
    """
    s = torch.as_tensor(scores)
    lab = torch.as_tensor(labels, device=s.device).long()
    true = s.gather(1, lab[:, None])
    cls = torch.arange(s.shape[1], device=s.device)[None, :]
    rank = (s > true).sum(1) + ((s == true) & (cls < lab[:, None])).sum(1)
    return (rank < k).cpu().numpy()


def classification_metrics(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> dict[str, float]:
    """``top1`` (and ``top5`` when there are more than 5 classes) in percent."""
    out = {"top1": float(topk_correct(scores, labels, 1).mean() * 100.0)}
    if np.shape(scores)[1] > 5:
        out["top5"] = float(topk_correct(scores, labels, 5).mean() * 100.0)
    return out


def classification_result(scores: torch.Tensor | np.ndarray, labels: np.ndarray, extras: dict[str, Any]) -> ProtocolResult:
    """Metrics plus per-item predictions (top-1 class; correct exactly as ``top1`` counts it)."""
    scores_np = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    labels = np.asarray(labels)
    preds = Predictions(item=np.arange(len(labels)), pred=scores_np.argmax(1),
                        correct=topk_correct(scores, labels, 1), target=labels)
    return ProtocolResult(metrics=classification_metrics(scores, labels), extras=extras, predictions=preds)


def accuracy(X: torch.Tensor, y: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> float:
    """Top-1 accuracy (fraction) of the linear classifier (W, b) on (X, y)."""
    return float(topk_correct(torch.addmm(b, X, W), y, 1).mean())


def search_l2(
    fit: Callable[[float, tuple[torch.Tensor, torch.Tensor] | None], tuple[torch.Tensor, torch.Tensor]],
    val_accuracy: Callable[[torch.Tensor, torch.Tensor], float],
    l2_grid: list[float],
) -> tuple[float, dict[float, float], tuple[torch.Tensor, torch.Tensor]]:
    """Fit each λ of the grid (strong -> weak, each warm-started from the previous fit); the λ
    with the best validation accuracy (ties: the larger λ), every λ's accuracy, the chosen fit."""
    val_acc: dict[float, float] = {}
    best, best_fit, init = None, None, None
    for l2 in sorted(set(l2_grid), reverse=True):
        init = fit(l2, init)
        val_acc[l2] = val_accuracy(*init)
        if best is None or val_acc[l2] > val_acc[best]:  # strictly better: ties keep the larger λ
            best, best_fit = l2, init
    assert best is not None and best_fit is not None, "l2_grid is empty"
    return best, val_acc, best_fit


def select_l2(
    X_fit: torch.Tensor,
    y_fit: torch.Tensor,
    X_val: torch.Tensor,
    y_val: torch.Tensor,
    l2_grid: list[float],
    num_classes: int,
    max_iter: int = 1000,
    tol: float = 1e-6,
) -> tuple[float, dict[float, float], tuple[torch.Tensor, torch.Tensor]]:
    """:func:`search_l2` with full-batch fits on (X_fit, y_fit), accuracy on (X_val, y_val)."""
    return search_l2(
        lambda l2, init: fit_logistic(X_fit, y_fit, l2, num_classes, max_iter, tol, init),
        lambda W, b: accuracy(X_val, y_val, W, b), l2_grid,
    )


def linear_probe_scores(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    num_classes: int,
    params: LinearProbeParams,
    seed: int,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The whole protocol on feature arrays: test scores [N_test, C] and extras (λ, val accuracies)."""
    xtr, xte = standardize(np.asarray(train_feats), np.asarray(test_feats))
    Xtr = torch.from_numpy(xtr).to(device)
    ytr = torch.from_numpy(np.asarray(train_labels, dtype=np.int64)).to(device)
    grid = sorted({float(v) for v in params.l2_grid}, reverse=True)
    extras: dict[str, Any] = {"objective": "mean CE + l2*||W||^2; sklearn C = 1/(2*l2*n_train)"}
    init = None
    if len(grid) > 1:
        fit_idx, val_idx = stratified_split(np.asarray(train_labels), params.val_fraction, seed)
        if len(val_idx) == 0 or len(fit_idx) == 0:
            raise ClBenchError(
                f"linear_probe: val_fraction={params.val_fraction} leaves an empty fit or validation "
                f"part of {len(ytr)} training items; use a val_fraction nearer 0.2 or a single l2_grid value"
            )
        fi, vi = torch.from_numpy(fit_idx).to(device), torch.from_numpy(val_idx).to(device)
        best, val_acc, init = select_l2(
            Xtr[fi], ytr[fi], Xtr[vi], ytr[vi], grid, num_classes, params.max_iter, params.tol
        )
        extras["val_top1"] = {repr(k): v * 100.0 for k, v in val_acc.items()}
        extras["val_size"] = len(val_idx)
    else:
        best = grid[0]
    W, b = fit_logistic(Xtr, ytr, best, num_classes, params.max_iter, params.tol, init)
    extras["l2"] = best
    extras["sklearn_C"] = sklearn_c(best, len(ytr))
    Xte = torch.from_numpy(xte).to(device)
    return torch.addmm(b, Xte, W), extras


def _run(model: Any, data: ImageClassificationData, params: LinearProbeParams, ctx: RunContext) -> ProtocolResult:
    from cl_bench.memory_budget import budget_bytes
    from cl_bench.protocols.linear_probe_stream import full_batch_bytes, streamed_probe_scores

    train = ctx.stored_features(model, data.train)
    test = ctx.stored_features(model, data.test)
    on_device, on_host = full_batch_bytes(len(train), len(test), train.shape[1], data.num_classes, ctx.device.type)
    if on_device <= budget_bytes(ctx.device) and on_host <= budget_bytes(torch.device("cpu")):
        scores, extras = linear_probe_scores(
            train.load(), data.train.labels, test.load(), data.num_classes, params, ctx.seed, ctx.device
        )
        extras["solver"] = "L-BFGS, full batch"
    else:
        scores, extras = streamed_probe_scores(
            train, data.train.labels, test, data.num_classes, params, ctx.seed, ctx.device
        )
    return classification_result(scores, data.test.labels, extras)


PROTOCOL = register("protocol", "linear_probe")(
    Protocol(name="linear_probe", requires="image_encoder", params=LinearProbeParams, run=_run,
             budget=probe_budget)
)
