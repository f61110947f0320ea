"""Feeding a model from lazily decoded data: loader workers, pinned memory, prefetch.

``--workers N`` decodes in N worker processes (``0``: in the main process, as before);
``auto`` picks from the CPUs this process may use (:func:`auto_workers`). Batches are the same
items in the same order for any N (a DataLoader without shuffling keeps batch order), so the
features are the same. With a CUDA device batches come in pinned memory and are copied with
``non_blocking=True``; each worker keeps ``prefetch`` batches ready.

The lazy splits a run will read (train and test of an image folder, say) are registered when
the :class:`Feeder` is made: one pool of persistent workers serves all of them, one after the
other, instead of forking a new pool per split. Any other dataset gets its own loader.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from cl_bench.errors import ClBenchError

DEFAULT_PREFETCH = 4  # batches each worker keeps ready


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def auto_workers(device: torch.device) -> int:
    """Loader workers when none are asked for: all CPUs but one feed a GPU; on CPU, half of them
    decode and the other half compute (on 2 CPUs: 1 worker)."""
    cpus = available_cpus()
    return max(0, cpus - 1) if device.type == "cuda" else cpus // 2


def auto_threads(workers: int) -> int:
    """torch threads when none are asked for: ``OMP_NUM_THREADS`` if set, else the CPUs the
    loader workers leave (at least 1). Never torch's default, which ignores other processes."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, available_cpus() - workers)


def parse_count(value: str | int | None, what: str) -> int | None:
    """``auto``/None -> None; a non-negative integer -> itself; else a one-line error."""
    if value is None or value == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if n < 0 or (what == "--threads" and n == 0):
        least = 1 if what == "--threads" else 0
        raise ClBenchError(f"{what} must be 'auto' or an integer >= {least}, got {value!r}")
    return n


class _Table(Dataset):
    """Several datasets addressed as (dataset number, index): what the persistent pool serves."""

    def __init__(self, datasets: Sequence[Any]) -> None:
        self.datasets = list(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.datasets[key[0]][key[1]]


class _Plan:
    """A batch sampler whose batches are set before each pass (persistent workers re-read it)."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def __iter__(self) -> Iterator[list[Any]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _batches(start: int, stop: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, stop))) for i in range(start, stop, size)]


class Feeder:
    """DataLoaders for one run; see the module docstring. Close it (or use ``with``) at the end."""

    def __init__(self, workers: int, device: torch.device, prefetch: int = DEFAULT_PREFETCH,
                 datasets: Sequence[Any] = ()) -> None:
        self.workers, self.device, self.prefetch = int(workers), device, int(prefetch)
        self.pin = device.type == "cuda"
        self._known = {id(d): n for n, d in enumerate(datasets)}
        self._plan = _Plan()
        self._pool: DataLoader | None = None
        if self.workers > 0 and datasets:
            self._pool = DataLoader(_Table(datasets), batch_sampler=self._plan, num_workers=self.workers,
                                    pin_memory=self.pin, prefetch_factor=self.prefetch, persistent_workers=True)

    def loader(self, dataset: Any, start: int, batch_size: int,
               collate: Callable[[list[Any]], Any] | None = None) -> DataLoader:
        """Batches ``[start, start + batch_size)``, … of ``dataset`` in order (``start`` on a batch
        boundary keeps every batch what a run from 0 gives)."""
        n = len(dataset)
        if self._pool is not None and id(dataset) in self._known and collate is None:
            k = self._known[id(dataset)]
            self._plan.batches = [[(k, i) for i in b] for b in _batches(start, n, batch_size)]
            return self._pool
        kw: dict[str, Any] = {}
        if self.workers > 0:
            kw = {"num_workers": self.workers, "prefetch_factor": self.prefetch}
        return DataLoader(dataset, batch_sampler=_batches(start, n, batch_size), pin_memory=self.pin,
                          collate_fn=collate or default_collate, **kw)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=self.pin)

    def close(self) -> None:
        it = getattr(self._pool, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()  # persistent workers: stop them now, not at garbage collection
        self._pool = None

    def __enter__(self) -> Feeder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
