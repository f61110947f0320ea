"""Reduced run budgets: ``--smoke`` and ``--limit N``.

``--limit N`` caps the evaluated items, as lm-evaluation-harness' ``--limit``: the first ``N``
items of the test split in its order (per dataset, pattern or language pair where a task
averages several; each protocol states how). ``--smoke`` runs a task's real pipeline (its
loaders, preprocessing, training loop and metric code) at a tiny budget: at most
:data:`SMOKE_EVAL_ITEMS` evaluated items (unless ``--limit`` says otherwise), at most
:data:`SMOKE_TRAIN_STEPS` training iterations (detection / segmentation fine-tuning, SGD linear
evaluation, CPT and prompt tuning; a fresh training recipe runs one epoch), and the first
:data:`SMOKE_TRAIN_PER_CLASS` training items of each class where a probe extracts training features.

A protocol declares how it applies a budget: its registration names a :data:`BudgetHook`
``(params, data, budget) -> Budgeted`` that returns the reduced params and data and says, in
words, what it changed (``applied``). The engine calls it, and never asks which protocol it is.
The budget is recorded in the result (``ResultRecord.budget``); such results are never combined
with full ones (:mod:`cl_bench.report.table` lists them apart). Reduced data has its own
fingerprints, so cached features of a reduced run are never served to a full one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cl_bench.errors import ClBenchError

SMOKE_EVAL_ITEMS = 8  # evaluated items under --smoke when --limit does not say
SMOKE_TRAIN_STEPS = 2  # optimizer steps of a protocol's fine-tuning under --smoke
SMOKE_TRAIN_PER_CLASS = 2  # training items per class a probe extracts under --smoke
SMOKE_DENSE_BATCH = 1  # images per fine-tuning iteration of a dense protocol under --smoke
MAX_LIMIT = 10**6


@dataclass(frozen=True)
class Budget:
    """What a run may spend: everything (the default), or a smoke budget and/or an item cap."""

    smoke: bool = False
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and not 1 <= self.limit <= MAX_LIMIT:
            raise ClBenchError(f"--limit must be in 1..{MAX_LIMIT}, got {self.limit}")

    @property
    def full(self) -> bool:
        return not self.smoke and self.limit is None

    @property
    def eval_items(self) -> int | None:
        """How many items are evaluated (per dataset / pattern / pair where the protocol says); None: all."""
        if self.limit is not None:
            return self.limit
        return SMOKE_EVAL_ITEMS if self.smoke else None

    @property
    def train_steps(self) -> int | None:
        """The cap on a protocol's training iterations; None: the task's own."""
        return SMOKE_TRAIN_STEPS if self.smoke else None


@dataclass
class Budgeted:
    """A protocol's params and data reduced to a budget, and what was reduced (in words, by part)."""

    params: Any
    data: Any
    applied: dict[str, str] = field(default_factory=dict)
    train_steps: int | None = None  # the training iterations the protocol will run, when it trains


BudgetHook = Callable[[Any, Any, Budget], Budgeted]


def first(n_items: int, n: int | None) -> np.ndarray:
    """Indices of the first ``n`` of ``n_items`` items (all of them when ``n`` is None)."""
    return np.arange(n_items if n is None else min(n, n_items))


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices (ascending) of the first ``per_class`` items of every class in ``labels``."""
    labels = np.asarray(labels)
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        keep[np.flatnonzero(labels == c)[:per_class]] = True
    return np.flatnonzero(keep)


def of(kept: int, total: int, what: str) -> str:
    """'first 8 of 4952 images' (or 'all 5 images' when nothing was cut)."""
    return f"all {total} {what}" if kept >= total else f"first {kept} of {total} {what}"


def steps_of(kept: int, total: int, what: str = "iterations") -> str:
    return f"{kept} of {total} {what}" if kept < total else f"all {total} {what}"


def record(budget: Budget, reduced: Budgeted) -> dict[str, Any]:
    """The result's ``budget`` field: what was asked and what the protocol did."""
    return {"smoke": budget.smoke, "limit": budget.eval_items, "train_steps": reduced.train_steps,
            "applied": dict(reduced.applied)}


def apply_budget(protocol: Any, params: Any, data: Any, budget: Budget) -> Budgeted:
    """``protocol``'s own budget hook on (params, data); the full budget changes nothing."""
    if budget.full:
        return Budgeted(params, data)
    hook: BudgetHook | None = getattr(protocol, "budget", None)
    if hook is None:
        raise ClBenchError(f"protocol '{protocol.name}' does not declare how it applies --smoke / --limit; "
                           "run this task without them")
    return hook(params, data, budget)


# --------------------------------------------------------------------------- hooks shared by several protocols


def first_test(what: str) -> BudgetHook:
    """A hook keeping the first N items of ``data.test`` (any split :func:`cl_bench.data.subsets.take`
    can cut), described as ``what`` ("test images"...); params and the training split unchanged."""

    def hook(params: Any, data: Any, budget: Budget) -> Budgeted:
        from cl_bench.data.subsets import replace_test

        n = len(data.test)
        idx = first(n, budget.eval_items)
        return Budgeted(params, replace_test(data, idx), {"test": of(len(idx), n, what)})

    hook.__doc__ = f"The first N {what}; nothing else changes."
    return hook


def probe_budget(params: Any, data: Any, budget: Budget) -> Budgeted:
    """Frozen-feature probes of an image classification set (linear probe, kNN): the first N test
    images; under ``--smoke`` also the training features of only the first
    :data:`SMOKE_TRAIN_PER_CLASS` training images of each class (every class kept)."""
    from cl_bench.data.subsets import take

    reduced = first_test("test images")(params, data, budget)
    if budget.smoke:
        idx = first_per_class(data.train.labels, SMOKE_TRAIN_PER_CLASS)
        reduced.applied["train"] = (f"first {SMOKE_TRAIN_PER_CLASS} training images of each class: "
                                    f"{len(idx)} of {len(data.train)}")
        reduced.data = dataclasses.replace(reduced.data, train=take(data.train, idx))
    return reduced
