"""Content fingerprints: sha256 of a model's weights, and of a file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

_TAG = b"cl_bench.model_fingerprint.v1\0"


def model_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict plus non-persistent buffers (e.g. input mean/std): all that fixes outputs."""
    tensors = dict(module.state_dict())
    for name, buf in module.named_buffers():
        tensors.setdefault(name, buf)
    return tensors


def model_fingerprint(module: nn.Module, extra: str = "") -> str:
    """sha256 over every tensor of ``module`` (keys sorted) and ``extra``.

    Each tensor contributes its key, dtype, shape and raw bytes (contiguous, on CPU), so
    the digest changes with any single weight and not with device or memory layout.
    ``extra`` (e.g. a hash of the arch params) distinguishes parameter-free encoders.
    """
    h = hashlib.sha256(_TAG)
    h.update(f"extra={extra}\0".encode())
    for key, tensor in sorted(model_tensors(module).items()):
        t = tensor.detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0{len(raw)}\0".encode())
        h.update(memoryview(raw))
    return h.hexdigest()


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()
