"""Frozen features of a split: one data path for every model that embeds data.

A model's :class:`EmbedPlan` says how many rows a split gives, in which order they are computed
(``order``: processing position -> row; None = row order) and how to compute them from a
processing position on (``run(start)`` yields one output batch at a time). Image encoders get
their plan here (:func:`image_plan`); text and image–text encoders build theirs
(``embed_plan(split, device, feeder)``). :func:`extract_into` runs a plan under the requested
precision and streams every batch into a feature-cache entry (:mod:`cl_bench.feature_store`),
so features never gather in memory; :func:`collect` runs one into an in-memory array.

Precision: ``fp32`` (the default) runs the model as it is; ``bf16`` / ``fp16`` run it under
``torch.autocast`` on the model's device (on CPU only bf16 is fast). fp16 features are stored as
float16, bf16 ones as float32 (exact). fp32 reproduces the features of every earlier release.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cl_bench.errors import ClBenchError
from cl_bench.feature_store import CHUNK_ROWS, EntryWriter, StoredFeatures, chunk_rows_for
from cl_bench.feed import Feeder
from cl_bench.models.interfaces.hooks import embed_planner, split_embedder

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_PRECISION = "fp32"
STORED_DTYPE = {"fp32": np.float32, "bf16": np.float32, "fp16": np.float16}
IMAGE_BATCH = 256  # images per forward pass of an image encoder


@dataclass
class EmbedPlan:
    """How a model embeds one split; see the module docstring."""

    rows: int
    batch_rows: int  # rows per batch; ``run`` takes a start that is a multiple of it
    run: Callable[[int], Iterator[torch.Tensor | np.ndarray]]
    order: np.ndarray | None = None


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ClBenchError(f"unknown --precision '{precision}'; use {', '.join(PRECISIONS)}")
    return precision


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """The autocast region of ``precision`` on ``device`` (fp32: no autocast at all)."""
    dtype = PRECISIONS[check_precision(precision)]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def image_plan(model: torch.nn.Module, split: Any, device: torch.device, feeder: Feeder,
               batch_size: int = IMAGE_BATCH) -> EmbedPlan:
    """An image encoder over an image split: in-memory splits (``tensor()``) are sliced, lazy
    ones (decoded per item) come through the feeder's loader workers."""
    def run(start: int) -> Iterator[torch.Tensor]:
        model.eval()
        if hasattr(split, "tensor"):
            images = split.tensor()
            for i in range(start, len(images), batch_size):
                yield model(images[i : i + batch_size].to(device))
        else:
            for x, _ in feeder.loader(split, start, batch_size):
                yield model(feeder.to_device(x))

    return EmbedPlan(len(split), batch_size, run)


def plan_of(model: Any, split: Any, device: torch.device, feeder: Feeder) -> EmbedPlan | None:
    """The model's plan for ``split``; None for a model that only offers ``embed_split``."""
    own = embed_planner(model)
    if own is not None:
        return own(split, device, feeder)
    if split_embedder(model) is not None:
        return None
    return image_plan(model, split, device, feeder)


def _rows(out: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(out, torch.Tensor):
        return out.detach().float().cpu().numpy()
    return np.asarray(out, dtype=np.float32)


def extract_into(writer: EntryWriter, plan: EmbedPlan | None, model: Any, split: Any, device: torch.device,
                 precision: str = DEFAULT_PRECISION, check: Callable[[np.ndarray], None] | None = None) -> None:
    """Stream the features of ``split`` into ``writer`` from its first missing chunk on
    (``plan`` None: the model only offers ``embed_split``, computed whole and written at once)."""
    with torch.no_grad(), autocast(device, precision):
        if plan is None:
            model.eval()
            whole = np.asarray(model.embed_split(split, device), dtype=np.float32)
            if check is not None:
                check(whole)
            writer.write(whole[writer.start:])
            return
        for out in plan.run(writer.start):
            rows = _rows(out)
            if check is not None:
                check(rows)
            writer.write(rows)


def writer_for(plan: EmbedPlan | None, split: Any, folder: Path, precision: str = DEFAULT_PRECISION,
               chunk_rows: int = CHUNK_ROWS) -> EntryWriter:
    """An :class:`EntryWriter` shaped for ``plan`` (resuming what ``folder`` already holds)."""
    rows = plan.rows if plan is not None else len(split)
    batch = plan.batch_rows if plan is not None else max(1, rows)
    order = plan.order if plan is not None else None
    return EntryWriter(folder, rows, chunk_rows_for(batch, chunk_rows), order,
                       STORED_DTYPE[check_precision(precision)])


def extract_entry(folder: Path, model: Any, split: Any, device: torch.device, feeder: Feeder,
                  precision: str = DEFAULT_PRECISION, plan: EmbedPlan | None = None,
                  chunk_rows: int = CHUNK_ROWS, check: Callable[[np.ndarray], None] | None = None) -> StoredFeatures:
    """Extract (or finish extracting) the cache entry in ``folder``; ``plan`` defaults to the
    model's own (:func:`plan_of`); ``check`` sees every batch before it is written (finiteness).
    An empty split gives an empty entry when the model names its ``embed_dim``, else a one-line error."""
    plan = plan if plan is not None else plan_of(model, split, device, feeder)
    writer = writer_for(plan, split, folder, precision, chunk_rows)
    try:
        if plan is not None and plan.rows == 0:
            if getattr(model, "embed_dim", None) is None:
                raise ClBenchError("the dataset split is empty: nothing to evaluate")
            writer.write(np.zeros((0, model.embed_dim), np.float32))
        else:
            extract_into(writer, plan, model, split, device, precision, check)
    finally:
        writer.close()
    return writer.finish()


def collect(plan: EmbedPlan, dim: int | None = None) -> np.ndarray:
    """Run ``plan`` from the start into one float32 array [rows, D] in row order."""
    out: np.ndarray | None = None if dim is None else np.zeros((plan.rows, dim), np.float32)
    pos = 0
    for batch in plan.run(0):
        rows = _rows(batch)
        if out is None:
            out = np.zeros((plan.rows, rows.shape[1]), np.float32)
        where = slice(pos, pos + len(rows)) if plan.order is None else plan.order[pos : pos + len(rows)]
        out[where] = rows
        pos += len(rows)
    return out if out is not None else np.zeros((0, dim or 0), np.float32)


def extract_features(model: torch.nn.Module, split: Any, device: torch.device, batch_size: int = IMAGE_BATCH,
                     feeder: Feeder | None = None, precision: str = DEFAULT_PRECISION) -> np.ndarray:
    """Embeddings of every item of ``split`` in order, in eval mode, without gradients, in memory."""
    feeder = feeder or Feeder(0, device)
    with torch.no_grad(), autocast(device, precision):
        own = embed_planner(model)
        if own is None and split_embedder(model) is not None:
            model.eval()
            return np.asarray(model.embed_split(split, device), dtype=np.float32)
        plan = own(split, device, feeder) if own is not None else image_plan(model, split, device, feeder, batch_size)
        if plan.rows == 0:
            raise ClBenchError("the dataset split is empty: nothing to evaluate")
        return collect(plan)
