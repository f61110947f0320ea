"""``icl_regression``: in-context linear regression error curves, baselines, and ICL-vs-GD.

Error (Garg et al., reference ``eval.py::eval_batch`` and ``plot_utils.py``; PROTOCOLS.md §9b):
for every test prompt and position i (0-based) the model predicts y_i from the pairs before it
and x_i; the curve is the mean over prompts of (ŷ_i − y_i)² / d (so predicting 0 scores ≈ 1),
with a 5–95% bootstrap band of that mean (``n_bootstrap`` resamples of the prompts, seeded).

Baselines on the same prompts (no training; each predicts 0 at i = 0):

- ``lsq``: least squares, minimum-norm solution when i < d (pseudo-inverse; the reference's
  ``torch.linalg.lstsq``; Bayes-optimal for noiseless prompts);
- ``ridge``: only for noisy prompts, λ = σ² (posterior mean under w ~ N(0, I), Bayes-optimal);
- ``knn3``: mean y of the 3 nearest x (uniform weights, as the reference's ``NNModel``);
- ``averaging``: w = mean_j x_j y_j (the reference's ``AveragingModel``);
- ``gd{k}``: k full-batch gradient steps on ½·mean_j (w·x_j − y_j)² from w = 0, the step size
  per k chosen from a log grid on separately drawn calibration prompts (lowest mean error).

ICL vs GD on models trained for ICL (the von Oswald / Akyürek / Garg setting: a sequence model
trained on in-context regression prompts, compared with GD run on the prompt's own pairs — the
"ICL objective" setting that "Do pretrained Transformers learn in-context by gradient
descent?", arXiv 2310.08540, contrasts with LMs pretrained on natural text; that real-LM
comparison, ICL against fine-tuning the LM on the same k examples, is ``icl_fewshot`` with
``adapt: finetune``, e.g. task icl-vs-finetune-synthetic):
- prediction similarity: over every (prompt, i ≥ 1), the cosine of the model's predictions with
  each baseline's and their mean squared distance / d;
- order sensitivity: the first n − 1 pairs of ``order_prompts`` prompts are permuted
  ``order_permutations`` times, the query kept last; sensitivity = mean over prompts of the
  variance of the final prediction across orders / d — for the model, for full-batch GD (order
  invariant: ≈ 0) and for one pass of online SGD (one example per step, in prompt order); and the
  correlation of the model's and SGD's order-induced deviations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from cl_bench.budget import first_test
from cl_bench.components import register
from cl_bench.data.icl.linreg import LinRegData, sample_prompts
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext

ETA_GRID = np.geomspace(0.01, 2.0, 24)


class ICLRegressionParams(ProtocolParams):
    batch_size: int = Field(default=256, ge=1)
    n_bootstrap: int = Field(default=1000, ge=10)
    gd_steps: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    calibration_prompts: int = Field(default=512, ge=16)
    order_prompts: int = Field(default=256, ge=2)
    order_permutations: int = Field(default=8, ge=2)


# --- baselines: numpy float64, xs [N, n, d], ys [N, n] -> preds [N, n] ---------------------------
def _per_position(xs: np.ndarray, ys: np.ndarray, fit: Any) -> np.ndarray:
    preds = np.zeros(ys.shape, dtype=np.float64)
    for i in range(1, ys.shape[1]):
        w = fit(xs[:, :i], ys[:, :i])  # [N, d]
        preds[:, i] = np.einsum("nd,nd->n", xs[:, i], w)
    return preds


def least_squares(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return _per_position(xs, ys, lambda X, y: np.einsum("ndi,ni->nd", np.linalg.pinv(X), y))


def ridge(xs: np.ndarray, ys: np.ndarray, lam: float) -> np.ndarray:
    def fit(X: np.ndarray, y: np.ndarray) -> np.ndarray:
        gram = np.einsum("nid,nie->nde", X, X) + lam * np.eye(X.shape[2])
        return np.linalg.solve(gram, np.einsum("nid,ni->nd", X, y)[..., None])[..., 0]

    return _per_position(xs, ys, fit)


def averaging(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return _per_position(xs, ys, lambda X, y: np.einsum("nid,ni->nd", X, y) / X.shape[1])


def gradient_descent(xs: np.ndarray, ys: np.ndarray, steps: int, eta: float) -> np.ndarray:
    def fit(X: np.ndarray, y: np.ndarray) -> np.ndarray:
        w = np.zeros((X.shape[0], X.shape[2]))
        for _ in range(steps):
            resid = np.einsum("nid,nd->ni", X, w) - y
            w = w - eta * np.einsum("nid,ni->nd", X, resid) / X.shape[1]
        return w

    with np.errstate(over="ignore", invalid="ignore"):
        return _per_position(xs, ys, fit)


def nearest_neighbours(xs: np.ndarray, ys: np.ndarray, k: int = 3) -> np.ndarray:
    preds = np.zeros(ys.shape, dtype=np.float64)
    for i in range(1, ys.shape[1]):
        dist = np.square(xs[:, :i] - xs[:, i : i + 1]).sum(axis=2)
        idx = np.argsort(dist, axis=1, kind="stable")[:, : min(k, i)]
        preds[:, i] = np.take_along_axis(ys[:, :i], idx, axis=1).mean(axis=1)
    return preds


def online_sgd_last(xs: np.ndarray, ys: np.ndarray, eta: float) -> np.ndarray:
    """One pass of per-example SGD over the first n − 1 pairs in order; prediction for the last x."""
    w = np.zeros((xs.shape[0], xs.shape[2]))
    with np.errstate(over="ignore", invalid="ignore"):
        for j in range(xs.shape[1] - 1):
            resid = np.einsum("nd,nd->n", xs[:, j], w) - ys[:, j]
            w = w - eta * resid[:, None] * xs[:, j]
        return np.einsum("nd,nd->n", xs[:, -1], w)


def _finite_mean(a: np.ndarray) -> float:
    m = float(np.mean(a))
    return m if np.isfinite(m) else float("inf")


def error_curve(preds: np.ndarray, ys: np.ndarray, d: int) -> np.ndarray:
    return np.square(preds - ys).mean(axis=0) / d


def bootstrap_band(sq_err: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """5% and 95% quantiles of the per-position mean over prompt resamples; sq_err [N, n]."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, sq_err.shape[0], size=(n_boot, sq_err.shape[0]))
    means = np.stack([sq_err[:, i][idx].mean(axis=1) for i in range(sq_err.shape[1])], axis=1)
    return np.quantile(means, 0.05, axis=0), np.quantile(means, 0.95, axis=0)


def similarity(a: np.ndarray, b: np.ndarray, d: int) -> tuple[float, float]:
    """(cosine, mean squared distance / d) of two prediction arrays over positions i ≥ 1."""
    x, y = a[:, 1:].ravel(), b[:, 1:].ravel()
    cos = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))
    return cos, float(np.square(x - y).mean() / d)


@torch.no_grad()
def model_predictions(model: Any, xs: np.ndarray, ys: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    out = []
    for b in range(0, len(xs), batch_size):
        x = torch.as_tensor(xs[b : b + batch_size], dtype=torch.float32, device=device)
        y = torch.as_tensor(ys[b : b + batch_size], dtype=torch.float32, device=device)
        out.append(model.regress(x, y).double().cpu().numpy())
    return np.concatenate(out)


def pick_eta(loss: Any) -> tuple[float, float]:
    best = min((_finite_mean(loss(eta)), float(eta)) for eta in ETA_GRID)
    return best[1], best[0]


def order_study(model: Any, xs: np.ndarray, ys: np.ndarray, eta_sgd: float, gd_eta: float, gd_k: int,
                p: ICLRegressionParams, seed: int, device: torch.device, d: int) -> dict[str, float]:
    rng = np.random.default_rng(seed + 1)
    xs, ys = xs[: p.order_prompts], ys[: p.order_prompts]
    n = xs.shape[1]
    model_p, sgd_p, gd_p = [], [], []
    for _ in range(p.order_permutations):
        perm = np.concatenate([rng.permutation(n - 1), [n - 1]])
        px, py = xs[:, perm], ys[:, perm]
        model_p.append(model_predictions(model, px, py, p.batch_size, device)[:, -1])
        sgd_p.append(online_sgd_last(px, py, eta_sgd))
        gd_p.append(gradient_descent(px[:, :], py, gd_k, gd_eta)[:, -1])
    m, s, g = (np.stack(v, axis=1) for v in (model_p, sgd_p, gd_p))  # [P_prompts, perms]
    dm, ds = m - m.mean(axis=1, keepdims=True), s - s.mean(axis=1, keepdims=True)
    denom = np.linalg.norm(dm) * np.linalg.norm(ds)
    return {
        "order_sensitivity": float(m.var(axis=1).mean() / d),
        "order_sensitivity_sgd": float(s.var(axis=1).mean() / d),
        "order_sensitivity_gd": float(g.var(axis=1).mean() / d),
        "order_corr_sgd": float((dm * ds).sum() / denom) if denom > 0 else 0.0,
    }


def run_icl_regression(model: Any, data: Any, params: ICLRegressionParams, ctx: RunContext) -> ProtocolResult:
    if not isinstance(data, LinRegData):
        raise ClBenchError("protocol icl_regression needs the icl-linreg dataset")
    if not hasattr(model, "regress") or getattr(model, "input_kind", "vectors") != "vectors":
        raise ClBenchError(
            "protocol icl_regression needs an in-context regression model (methods icl-transformer, icl-lstm, "
            "icl-linear-rnn); this method's model has no regress()"
        )
    d, sigma = data.n_dims, data.noise_std
    xs, ys = data.test.xs.astype(np.float64), data.test.ys.astype(np.float64)
    preds = model_predictions(model, xs, ys, params.batch_size, ctx.device)
    sq = np.square(preds - ys) / d
    curve = sq.mean(axis=0)
    lo, hi = bootstrap_band(sq, params.n_bootstrap, ctx.seed)

    gen = torch.Generator().manual_seed(10_000 + ctx.seed)
    cx, cy, _ = sample_prompts(gen, params.calibration_prompts, data.n_points, d, None, sigma)
    cx, cy = cx.double().numpy(), cy.double().numpy()
    baselines = {"lsq": least_squares(xs, ys), "knn3": nearest_neighbours(xs, ys, 3), "averaging": averaging(xs, ys)}
    if sigma > 0:
        baselines["ridge"] = ridge(xs, ys, sigma**2)
    etas = {}
    for k in params.gd_steps:
        eta, _ = pick_eta(lambda e, k=k: error_curve(gradient_descent(cx, cy, k, e), cy, d)[1:])
        etas[k] = eta
        baselines[f"gd{k}"] = gradient_descent(xs, ys, k, eta)
    eta_sgd, _ = pick_eta(lambda e: np.square(online_sgd_last(cx, cy, e) - cy[:, -1]))

    base_curves = {name: error_curve(b, ys, d) for name, b in baselines.items()}
    metrics: dict[str, float] = {"mse_avg": float(curve.mean()), "mse_last": float(curve[-1])}
    if d < len(curve):
        metrics["mse_at_d"] = float(curve[d])
    for name, c in base_curves.items():
        metrics[f"{name}_mse_avg"] = float(c.mean())
    metrics["excess_over_lsq"] = metrics["mse_avg"] - metrics["lsq_mse_avg"]
    sims = {name: similarity(preds, b, d) for name, b in baselines.items()}
    gd_names = [f"gd{k}" for k in params.gd_steps]
    for name in ("lsq", gd_names[0] if gd_names else None):
        if name:
            metrics[f"cos_to_{name}"], metrics[f"dist_to_{name}"] = sims[name]
    best_gd = min(gd_names, key=lambda g: sims[g][1]) if gd_names else None
    if best_gd:
        metrics["dist_to_gd_best"] = sims[best_gd][1]
        k_best = int(best_gd[2:])
        metrics.update(order_study(model, xs, ys, eta_sgd, etas[k_best], k_best, params, ctx.seed, ctx.device, d))
    extras = {
        "n_prompts": len(xs), "n_dims": d, "noise_std": sigma,
        "curve": {"examples": list(range(len(curve))), "model": curve.tolist(), "model_p05": lo.tolist(),
                  "model_p95": hi.tolist(), **{k: v.tolist() for k, v in base_curves.items()}},
        "gd_step_sizes": {str(k): v for k, v in etas.items()}, "sgd_step_size": eta_sgd,
        "similarity": {name: {"cos": c, "dist": s} for name, (c, s) in sims.items()},
        "gd_best_match": best_gd,
    }
    return ProtocolResult(metrics=metrics, extras=extras)


register("protocol", "icl_regression")(Protocol(
    name="icl_regression", requires="sequence_model", params=ICLRegressionParams, run=run_icl_regression,
    data_kind="icl_regression", budget=first_test("test prompts"),
))
