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

Protocol: standardize with train mean/std; split train (stratified, ``ctx.seed``) into a fit
part and a ``val_fraction`` validation part; fit every λ of ``l2_grid`` on the fit part, from
strong to weak regularisation, each warm-started from the previous solution; keep the λ with
the best validation accuracy (ties: the larger λ); refit on all of train (warm-started);
report top-1 (and top-5 when there are more than 5 classes) on test, in percent.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field

from cl_bench.budget import probe_budget
from cl_bench.components import register
from cl_bench.data.splits import stratified_split
from cl_bench.data.types import ImageClassificationData
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


def standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train - μ) / σ and (test - μ) / σ with μ, σ of ``train`` (σ = 1 where a feature is constant)."""
    mean = train.mean(axis=0, dtype=np.float64)
    std = train.std(axis=0, dtype=np.float64)
    std[std < 1e-12 * max(1.0, float(np.abs(mean).max(initial=0.0)))] = 1.0
    out = [((a - mean) / std).astype(np.float32) for a in (train, test)]
    return out[0], out[1]


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


def weight_scale(X: torch.Tensor, l2: float, num_classes: int) -> torch.Tensor:
    """Diagonal preconditioner: the solver works on V with W = scale[:, None] * V.

    ``scale_d = sqrt(q / (q·mean(x_d²) + 2λ))`` with ``q = (1/C)(1 - 1/C)``, the softmax
    curvature at uniform probabilities, equalises the curvature of W's rows (data term plus
    penalty) with the bias's. Without it, strong λ (large penalty curvature next to a weakly
    curved, unpenalised bias) takes L-BFGS hundreds of iterations; on standardized features
    with small λ it is ~1, i.e. no change.
    """
    q = (1.0 / num_classes) * (1.0 - 1.0 / num_classes)
    m = torch.linalg.vector_norm(X, dim=0, dtype=torch.float64).pow(2) / X.shape[0]
    return torch.sqrt(q / (q * m + 2.0 * l2)).to(X.dtype)


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
    if init is None:
        W = torch.zeros(X.shape[1], C, dtype=X.dtype, device=X.device)
        counts = torch.bincount(y, minlength=C).to(X.dtype)
        b = torch.log((counts + 0.5) / (len(y) + 0.5 * C))
    else:
        W = init[0].detach().to(X.device, X.dtype)
        b = init[1].detach().to(X.device, X.dtype).clone()
    V = (W / scale).requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [V, b], lr=1.0, max_iter=max_iter, max_eval=max_iter * 5 // 4 + 20, tolerance_grad=tol,
        tolerance_change=_TOL_CHANGE, history_size=20, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        with torch.no_grad():
            loss, gW, gb = _softmax_loss_grad(X, y, V * scale, b, l2)
        V.grad, b.grad = gW.mul_(scale), gb
        return loss

    opt.step(closure)
    return (V.detach() * scale), b.detach()


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
    """Fit each λ of the grid (strong -> weak, warm-started); returns the λ with the best
    validation accuracy (ties: the larger λ), the accuracy of every λ, and the chosen fit."""
    val_acc: dict[float, float] = {}
    best, best_fit, init = None, None, None
    for l2 in sorted(set(l2_grid), reverse=True):
        init = fit_logistic(X_fit, y_fit, l2, num_classes, max_iter, tol, init)
        val_acc[l2] = accuracy(X_val, y_val, *init)
        if best is None or val_acc[l2] > val_acc[best]:  # strictly better: ties keep the larger λ
            best, best_fit = l2, init
    assert best is not None and best_fit is not None, "l2_grid is empty"
    return best, val_acc, best_fit


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
    train = ctx.features(model, data.train)
    test = ctx.features(model, data.test)
    scores, extras = linear_probe_scores(
        train, data.train.labels, test, data.num_classes, params, ctx.seed, ctx.device
    )
    return classification_result(scores, data.test.labels, extras)


PROTOCOL = register("protocol", "linear_probe")(
    Protocol(name="linear_probe", requires="image_encoder", params=LinearProbeParams, run=_run,
             budget=probe_budget)
)
