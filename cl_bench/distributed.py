"""One dense fine-tuning run over several processes (``torchrun``), as detectron2 / mmseg do it.

``torchrun --nproc_per_node N -m cl_bench.cli run --task T --method M --device cuda`` starts N
copies of ``clbench run``; :func:`init_from_env` joins them into one process group (NCCL on
GPUs, gloo on CPU) and gives each its device (``cuda:LOCAL_RANK``). Then:

- the pretrained model is obtained once: rank 0 trains (or loads) it under the cache lock and
  the others load the cached checkpoint;
- the ``detection`` and ``segmentation`` protocols wrap their model in DDP
  (:func:`wrap_ddp`); every rank draws the same seeded global batch of ``batch_size`` images
  and trains on its contiguous share (:func:`shard`), so the task's ``batch_size`` stays the
  global batch and ``lr`` needs no rescaling; ``bn: sync`` becomes ``SyncBatchNorm`` (statistics
  over the global batch, CUDA only);
- after training each rank checks that its weights equal rank 0's (a cheap checksum
  all-gather, recorded as ``extras.ddp``), rank 0 evaluates the whole test split, and only rank
  0 writes the result. Other protocols refuse to run on more than one process.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from cl_bench.errors import ClBenchError

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def init_from_env(device: str) -> str:
    """Join the ``torchrun`` process group if ``WORLD_SIZE`` > 1; returns the device this rank uses."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return device
    if not dist.is_available():
        raise ClBenchError("WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if gpu:
        if not torch.cuda.is_available() or local >= torch.cuda.device_count():
            raise ClBenchError(f"rank with LOCAL_RANK {local} has no CUDA device; lower --nproc_per_node")
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return f"cuda:{local}"
    dist.init_process_group("gloo")
    return "cpu"


def check_protocol(name: str) -> None:
    if world()[1] > 1 and name not in ("detection", "segmentation"):
        raise ClBenchError(
            f"protocol '{name}' runs in one process; only detection and segmentation are data-parallel under torchrun"
        )


def shard(batch: list[T]) -> list[T]:
    """This rank's contiguous share of a global batch (its size must divide by the world size)."""
    rank, size = world()
    if size == 1:
        return batch
    if len(batch) % size:
        raise ClBenchError(f"batch_size {len(batch)} does not divide over {size} processes; make it a multiple")
    k = len(batch) // size
    return batch[rank * k:(rank + 1) * k]


def wrap_ddp(model: nn.Module, device: torch.device, bn: str, find_unused: bool = False) -> nn.Module:
    """DDP over the process group (unchanged model in one process).

    ``find_unused``: for models whose forward may skip a head (a Mask R-CNN batch without a
    positive proposal leaves the mask head unused).
    """
    if world()[1] == 1:
        return model
    if bn == "sync" and device.type != "cuda":
        raise ClBenchError("bn: sync over several processes needs CUDA devices (SyncBatchNorm); on CPU use bn: finetune")
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def unwrap_after_training(model: nn.Module) -> tuple[nn.Module, dict[str, Any] | None]:
    """After training: the bare model, and whether all ranks hold the same weights (None in one process)."""
    rank, size = world()
    if size == 1:
        return model, None
    params = list(model.parameters())
    total = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1)  # on the device, one sync
    sums = [torch.zeros_like(total) for _ in range(size)]
    dist.all_gather(sums, total)
    values = [float(s) for s in sums]
    report = {"world_size": size, "rank": rank, "param_checksums": values,
              "params_in_sync": all(v == values[0] for v in values)}
    return getattr(model, "module", model), report
