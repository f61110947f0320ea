"""``fewshot_linear``: linear probe from k labelled images per class, averaged over label draws.

For each shot count ``k`` of ``shots`` and each draw ``d`` of ``draws``: pick ``k`` training items
of every class uniformly without replacement (``numpy`` generator seeded by
``[draw_seed, k, d]`` - the same subsets for every method and run seed, so methods are compared
on identical labels), fit the linear probe's multinomial logistic regression
(``linear_probe.fit_logistic``: mean CE + ``l2`` ||W||², L-BFGS) on those ``k * C`` items, and
score top-1 on the whole test split. With so few labels there is no validation split, so ``l2``
is fixed by the task. Features are standardized with the mean/std of the *whole* training split
(its labels unused), the same statistics for every draw.

Metrics (percent): ``top1_<k>shot`` = mean over draws, ``top1_<k>shot_std`` = their standard
deviation (ddof 0), and ``top1`` = the mean of the ``top1_<k>shot`` values.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field, field_validator

from cl_bench.budget import first_test
from cl_bench.components import register
from cl_bench.data.image.types import ImageClassificationData
from cl_bench.errors import ClBenchError
from cl_bench.predictions import Predictions
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext
from cl_bench.protocols.linear_probe import fit_logistic, sklearn_c, standardize, topk_correct


class FewShotParams(ProtocolParams):
    shots: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    draws: int = Field(5, ge=1, le=1000)
    l2: float = Field(0.01, gt=0.0, allow_inf_nan=False)
    draw_seed: int = Field(0, ge=0)
    max_iter: int = Field(1000, ge=1)
    tol: float = Field(1e-6, gt=0.0)

    @field_validator("shots")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"shot counts must be distinct, got {v}")
        return v


def draw_indices(labels: np.ndarray, num_classes: int, k: int, draw: int, draw_seed: int) -> np.ndarray:
    """Sorted indices of ``k`` items of every class 0..num_classes-1 for draw number ``draw``."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([draw_seed, k, draw])
    picked = []
    for c in range(num_classes):
        pool = np.flatnonzero(labels == c)
        if len(pool) < k:
            raise ClBenchError(
                f"fewshot_linear: class {c} has {len(pool)} training items, fewer than {k} shots; "
                "lower the shot count or use a larger training split"
            )
        picked.append(rng.choice(pool, size=k, replace=False))
    return np.sort(np.concatenate(picked))


def fewshot_runs(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    test_feats: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    params: FewShotParams,
    device: torch.device | str = "cpu",
) -> tuple[dict[int, list[float]], Predictions]:
    """Top-1 accuracy (percent) of every draw, per shot count, and one prediction row per
    (shot count, draw, test item).

    Item ``"k<k>/d<d>/q<i>"``: test item i under draw d of k shots. The draws depend only on the
    task (``draw_seed``), not on the run seed, so the ids name the same labelled subset in every
    run of the task. Every (k, draw) scores the whole test split, so 100 * mean(correct) over all
    rows is ``top1`` (the mean over shot counts of the mean over draws)."""
    xtr, xte = standardize(np.asarray(train_feats), np.asarray(test_feats))
    Xtr, Xte = torch.from_numpy(xtr).to(device), torch.from_numpy(xte).to(device)
    ytr = np.asarray(train_labels, dtype=np.int64)
    yte = torch.from_numpy(np.asarray(test_labels, dtype=np.int64)).to(device)
    out: dict[int, list[float]] = {}
    items: list[str] = []
    preds: list[np.ndarray] = []
    correct: list[np.ndarray] = []
    n_test = len(yte)
    for k in params.shots:
        accs = []
        for d in range(params.draws):
            idx = torch.from_numpy(draw_indices(ytr, num_classes, k, d, params.draw_seed)).to(device)
            W, b = fit_logistic(
                Xtr[idx],
                torch.from_numpy(ytr).to(device)[idx],
                params.l2,
                num_classes,
                params.max_iter,
                params.tol,
            )
            scores = torch.addmm(b, Xte, W)
            right = topk_correct(scores, yte, 1)
            accs.append(float(right.mean() * 100.0))
            items += [f"k{k}/d{d}/q{i}" for i in range(n_test)]
            preds.append(scores.argmax(dim=1).cpu().numpy())
            correct.append(np.asarray(right, dtype=bool))
        out[k] = accs
    target = np.tile(yte.cpu().numpy(), len(preds))
    return out, Predictions(item=np.array(items), pred=np.concatenate(preds), correct=np.concatenate(correct),
                            target=target)


def summarize(accs: dict[int, list[float]]) -> dict[str, float]:
    """``top1_<k>shot`` (mean over draws), ``top1_<k>shot_std``, and ``top1`` (mean over shot counts)."""
    metrics: dict[str, float] = {}
    for k, values in accs.items():
        metrics[f"top1_{k}shot"] = float(np.mean(values))
        metrics[f"top1_{k}shot_std"] = float(np.std(values))
    metrics["top1"] = float(np.mean([metrics[f"top1_{k}shot"] for k in accs]))
    return metrics


def _run(model: Any, data: ImageClassificationData, params: FewShotParams, ctx: RunContext) -> ProtocolResult:
    train = ctx.features(model, data.train)
    test = ctx.features(model, data.test)
    accs, preds = fewshot_runs(
        train, data.train.labels, test, data.test.labels, data.num_classes, params, ctx.device
    )
    extras = {
        "per_draw_top1": {str(k): v for k, v in accs.items()},
        "l2": params.l2,
        "sklearn_C": {str(k): sklearn_c(params.l2, k * data.num_classes) for k in params.shots},
        "standardized_with": "mean/std of all training features (labels unused)",
    }
    return ProtocolResult(metrics=summarize(accs), extras=extras, predictions=preds)


PROTOCOL = register("protocol", "fewshot_linear")(
    Protocol(name="fewshot_linear", requires="image_encoder", params=FewShotParams, run=_run,
             budget=first_test("test images"))
)
