"""``salient_separation``: how well an encoder separates salient from common patterns (SepCLR's
evaluation, neurospin-projects/2024_rlouiset_sep_clr ``*/evaluation_script.py``).

On the TARGET images only (background ones carry no salient label), four logistic-regression
probes — scikit-learn's default ``LogisticRegression()`` objective, C = 1, on raw (not
standardised) frozen features, fit on the train split — each scored by balanced accuracy
(mean per-class recall, in percent) on the test split:

- ``salient_space_salient_acc``: salient space -> salient label  (high is good)
- ``salient_space_common_acc``:  salient space -> common label   (low is good: no common leak)
- ``common_space_common_acc``:   common space  -> common label   (high is good)
- ``common_space_salient_acc``:  common space  -> salient label  (low is good: no salient leak)

``separation`` (the primary metric, cl_bench's summary, not the paper's) is
``½ [(salient_space_salient - common_space_salient) + (common_space_common - salient_space_common)]``:
how much better each attribute is read from its own space than from the other. An encoder
without a split (no ``separation_dims``) is probed on its whole embedding for both spaces, so
its separation is 0 by construction and its four numbers show what one space holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from cl_bench.budget import first_test
from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext, chance_facts
from cl_bench.protocols.linear_probe_solver import fit_logistic


class SalientSeparationParams(ProtocolParams):
    C: float = Field(1.0, gt=0.0)  # scikit-learn's inverse regularisation strength
    max_iter: int = Field(1000, ge=1)
    tol: float = Field(1e-6, gt=0.0)


def balanced_accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in ``labels`` of the fraction predicted correctly."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    return float(np.mean([np.mean(pred[labels == c] == c) for c in np.unique(labels)]))


def probe_balanced_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, params: SalientSeparationParams
) -> float:
    """Fit sklearn-equivalent LogisticRegression(C) on train; balanced accuracy on test (0..1)."""
    classes, y = np.unique(train_y, return_inverse=True)
    xtr = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float64))
    l2 = 1.0 / (2.0 * params.C * len(y))  # mean CE + l2·||W||² has sklearn's C·ΣCE + ½||W||² minimiser
    W, b = fit_logistic(xtr, y, l2, len(classes), params.max_iter, params.tol)
    scores = torch.from_numpy(np.ascontiguousarray(test_x, dtype=np.float64)) @ W + b
    return balanced_accuracy(classes[scores.argmax(1).numpy()], test_y)


def separation_metrics(
    train_feats: np.ndarray,
    test_feats: np.ndarray,
    train_split: Any,
    test_split: Any,
    dims: dict[str, list[int]] | None,
    params: SalientSeparationParams,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The four probes and ``separation`` (percent) on the target rows of the two splits."""
    tr = np.asarray(train_split.salient_labels) >= 0
    te = np.asarray(test_split.salient_labels) >= 0
    if tr.sum() < 2 or te.sum() < 1:
        raise ClBenchError("salient_separation: the dataset has too few target images to probe")
    full = [0, train_feats.shape[1]]
    spaces = {"common": full, "salient": full} if dims is None else dims
    labels = {"common": "common_labels", "salient": "salient_labels"}
    metrics: dict[str, float] = {}
    for space, (lo, hi) in spaces.items():
        for attr, field in labels.items():
            acc = probe_balanced_accuracy(
                train_feats[tr, lo:hi], getattr(train_split, field)[tr],
                test_feats[te, lo:hi], getattr(test_split, field)[te], params,
            )
            metrics[f"{space}_space_{attr}_acc"] = 100.0 * acc
    metrics["separation"] = 0.5 * (
        (metrics["salient_space_salient_acc"] - metrics["common_space_salient_acc"])
        + (metrics["common_space_common_acc"] - metrics["salient_space_common_acc"])
    )
    extras = {
        "spaces": {k: list(v) for k, v in spaces.items()},
        "split_encoder": dims is not None,
        "chance_common": 100.0 / len(np.unique(train_split.common_labels[tr])),
        "chance_salient": 100.0 / len(np.unique(train_split.salient_labels[tr])),
        "n_train_targets": int(tr.sum()),
        "n_test_targets": int(te.sum()),
        "probe": f"sklearn LogisticRegression(C={params.C}) objective on raw features; balanced accuracy",
    }
    return metrics, extras


def _run(model: Any, data: Any, params: SalientSeparationParams, ctx: RunContext) -> ProtocolResult:
    for split in (data.train, data.test):
        if not (hasattr(split, "common_labels") and hasattr(split, "salient_labels")):
            raise ClBenchError(
                f"protocol salient_separation needs a contrastive-analysis dataset with common and salient "
                f"labels (e.g. digits-salient); '{data.name}' has none"
            )
    dims = getattr(model, "separation_dims", None)
    train = ctx.features(model, data.train)
    test = ctx.features(model, data.test)
    metrics, extras = separation_metrics(train, test, data.train, data.test, dims, params)
    return ProtocolResult(metrics=metrics, extras={**chance_facts(data), **extras})


PROTOCOL = register("protocol", "salient_separation", params=SalientSeparationParams)(
    Protocol(requires="image_encoder", run=_run, budget=first_test("test images"))
)
