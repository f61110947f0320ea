"""What a protocol is, and the context the engine hands it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cl_bench.budget import BudgetHook
from cl_bench.specs import Capability
from cl_bench.params import Strict


class ProtocolParams(Strict):
    """Base of every protocol's parameter model (the one strict base: unknown fields are errors)."""


def chance_facts(data: Any) -> dict[str, int]:
    """``num_classes`` and ``n_test`` of a classification task's data, for a result's extras: the
    near-chance sanity gate reads them (a protocol of another kind states its own chance, if any)."""
    return {"num_classes": int(data.num_classes), "n_test": len(data.test)}


@dataclass
class ProtocolResult:
    metrics: dict[str, float | None]  # None: undefined on this data (never NaN; see cl_bench.finite)
    extras: dict[str, Any] = field(default_factory=dict)  # JSON-able: per-class scores, curves
    predictions: Any = None  # cl_bench.predictions.Predictions: one row per evaluated item


class RunContext:
    """Device, seed and the (cached) feature extractor a protocol may use."""

    def __init__(
        self,
        device: torch.device,
        seed: int,
        extract: Callable[[Any, Any], np.ndarray],
        progress: bool = False,
        stored: Callable[[Any, Any], Any] | None = None,
        model_fingerprint: str | None = None,
    ) -> None:
        self.model_fingerprint = model_fingerprint  # of the run's model (sha256 of its weights)
        self.device = device
        self.seed = seed
        self._extract = extract
        self._stored = stored
        self.progress = progress

    def features(self, model: Any, split: Any) -> np.ndarray:
        """Frozen embeddings [N, D] (float32) of every item of ``split``, through the cache."""
        return self._extract(model, split)

    def stored_features(self, model: Any, split: Any) -> Any:
        """The same features as a :class:`cl_bench.feature_store.StoredFeatures` (or
        ``ArrayFeatures``): read in blocks by protocols that must not load them whole."""
        if self._stored is not None:
            return self._stored(model, split)
        from cl_bench.feature_store import ArrayFeatures

        return ArrayFeatures(self._extract(model, split))


@dataclass(frozen=True)
class Protocol:
    """Declared as ``register("protocol", name, params=Model)(Protocol(requires=..., run=...))``:
    ``name`` and ``params`` come from the registration (:func:`cl_bench.components.register`)."""

    requires: Capability  # the capability the method must provide (one of specs.Capability)
    run: Callable[[Any, Any, Any, RunContext], ProtocolResult]
    data_kind: str = "image_classification"
    budget: BudgetHook | None = None  # how --smoke / --limit reduce its params and data (cl_bench.budget)
    name: str = ""  # set by the registration
    params: type[ProtocolParams] = ProtocolParams  # set by the registration
