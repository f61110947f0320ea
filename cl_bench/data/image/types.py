"""In-memory views of an image-classification dataset that protocols and trainers consume."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


def fingerprint_arrays(*arrays: np.ndarray, extra: str = "") -> str:
    """sha256 over the raw bytes, dtype and shape of ``arrays`` (plus an optional tag)."""
    h = hashlib.sha256(extra.encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


class ImageSplit(Dataset):
    """One split: ``__getitem__`` gives (float32 tensor [C, H, W] in [0, 1], int label).

    Subclasses must set ``labels`` (int64 array, one per item) and ``fingerprint`` (a hex
    digest that changes whenever pixels, labels or order change).
    """

    labels: np.ndarray
    fingerprint: str

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:  # pragma: no cover - abstract
        raise NotImplementedError


class ArrayImageSplit(ImageSplit):
    """A split held in memory as an array [N, C, H, W] (uint8 in 0..255 or float in [0, 1])."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        if images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.fingerprint = fingerprint_arrays(self.images, self.labels)

    def _to_float(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        if a.dtype == np.uint8:
            return t.float().div_(255.0)
        return t.float()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._to_float(self.images[index]), int(self.labels[index])

    def tensor(self) -> torch.Tensor:
        """All images as one float32 tensor [N, C, H, W] in [0, 1]."""
        return self._to_float(self.images)


@dataclass
class ImageClassificationData:
    """A labelled image dataset with a fixed train/test split."""

    name: str
    train: ImageSplit
    test: ImageSplit
    class_names: list[str]
    in_channels: int
    image_size: tuple[int, int]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for part in (self.name, self.train.fingerprint, self.test.fingerprint, *self.class_names):
            h.update(part.encode() + b"\0")
        return h.hexdigest()
