"""``mnist``: the official MNIST idx files (``.gz`` or raw) under ``DATA_ROOT/<root>/``.

The idx header is parsed by hand: magic ``0x00000803`` (2051, images, dims N, 28, 28) or
``0x00000801`` (2049, labels, dim N), then big-endian uint32 dimensions, then unsigned bytes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cl_bench.bounded_io import gunzip, read_bytes
from cl_bench.components import register
from cl_bench.data.splits import split_meta, stratified_split
from cl_bench.data.image.types import ArrayImageSplit, ImageClassificationData
from cl_bench.errors import ClBenchError
from cl_bench.specs import validate_params

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
LAYOUT = (
    "expected DATA_ROOT/{root}/train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (or the same names without .gz); pass --data-root"
)


class MnistParams(BaseModel):
    """``allow_test_only_split``: with only the t10k files present, split t10k (stratified)."""

    model_config = ConfigDict(extra="forbid")

    root: str = "mnist"
    allow_test_only_split: bool = False
    test_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    split_seed: int = Field(default=0, ge=0)


MAX_IDX_BYTES = 2**28  # MNIST's largest file, train-images, is 47 MB


def parse_idx(data: bytes, expected_magic: int, source: str) -> np.ndarray:
    """Decode one idx file's bytes into a uint8 array of its declared shape; errors name ``source``."""
    kind = "images" if expected_magic == IMAGES_MAGIC else "labels"
    ndim = 3 if expected_magic == IMAGES_MAGIC else 1
    if len(data) < 4:
        raise ClBenchError(f"{source}: truncated idx file ({len(data)} bytes); re-download it")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise ClBenchError(
            f"{source}: idx magic number is {magic}, expected {expected_magic} for MNIST {kind}; "
            "is this the right (undamaged, ubyte) file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ClBenchError(f"{source}: truncated idx header ({len(data)} bytes); re-download it")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims)  # Python ints: an absurd header cannot overflow into a "match"
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise ClBenchError(
            f"{source}: idx file {what}: header says {dims} ({expected} bytes) but file has {len(data)}; "
            "re-download it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def find_idx_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` if present, else ``folder/name.gz``, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read an idx file (gzip-compressed when its name ends in ``.gz``)."""
    if path.suffix == ".gz":  # inflated at most MAX_IDX_BYTES: a gzip bomb is cut off, not decoded
        data = gunzip(path, MAX_IDX_BYTES, "idx file")
    else:
        data = read_bytes(path, MAX_IDX_BYTES, "idx file")
    return parse_idx(data, expected_magic, str(path))


def read_idx_pair(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 [N, 28, 28], labels int64 [N], files used) of the ``train`` or ``test`` split."""
    img_name, lbl_name = FILES[split]
    img_path, lbl_path = find_idx_file(folder, img_name), find_idx_file(folder, lbl_name)
    if img_path is None or lbl_path is None:
        raise ClBenchError(f"{folder}: missing {img_name}[.gz] or {lbl_name}[.gz]")
    images = read_idx(img_path, IMAGES_MAGIC)
    labels = read_idx(lbl_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise ClBenchError(
            f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels; "
            "the pair must come from the same release"
        )
    if len(labels) and labels.max() > 9:
        raise ClBenchError(f"{lbl_path}: label {int(labels.max())} is not a digit 0..9; is this MNIST?")
    return images, labels.astype(np.int64), [img_path.name, lbl_path.name]


def _has_pair(folder: Path, split: str) -> bool:
    return all(find_idx_file(folder, name) is not None for name in FILES[split])


@register("dataset", "mnist")
def load(params: dict[str, Any] | None, data_root: Path | None) -> ImageClassificationData:
    """MNIST train (60k) / t10k (10k), or a stratified split of t10k with ``allow_test_only_split``."""
    p = validate_params(MnistParams, params, "dataset 'mnist' params")
    layout = LAYOUT.format(root=p.root)
    if data_root is None:
        raise ClBenchError(f"dataset 'mnist' needs a data root: {layout} (or set CLBENCH_DATA)")
    folder = Path(data_root) / p.root
    if not folder.is_dir():
        raise ClBenchError(f"MNIST folder {folder} does not exist: {layout}")
    has_train, has_test = _has_pair(folder, "train"), _has_pair(folder, "test")
    meta: dict[str, Any] = {"folder": str(folder)}
    if has_train and has_test:
        tr_x, tr_y, tr_files = read_idx_pair(folder, "train")
        te_x, te_y, te_files = read_idx_pair(folder, "test")
        meta.update(split="official train / t10k", files=tr_files + te_files)
    elif has_test and p.allow_test_only_split:
        x, y, files = read_idx_pair(folder, "test")
        tr_idx, te_idx = stratified_split(y, p.test_fraction, p.split_seed)
        tr_x, tr_y, te_x, te_y = x[tr_idx], y[tr_idx], x[te_idx], y[te_idx]
        meta.update(
            split="stratified split of t10k",
            files=files,
            test_fraction=p.test_fraction,
            split_seed=p.split_seed,
        )
    elif has_train:
        raise ClBenchError(
            f"{folder} has the train files but not t10k-images-idx3-ubyte[.gz] / "
            "t10k-labels-idx1-ubyte[.gz]; add them (the official test split)"
        )
    elif has_test:
        raise ClBenchError(
            f"{folder} has the t10k files but not train-images-idx3-ubyte[.gz] / "
            "train-labels-idx1-ubyte[.gz]; add them, or set dataset param "
            "allow_test_only_split: true to split t10k"
        )
    else:
        raise ClBenchError(f"no MNIST idx files in {folder}: {layout}")
    if tr_x.shape[1:] != te_x.shape[1:]:
        raise ClBenchError(
            f"{folder}: train images are {tr_x.shape[1:]} but test images are {te_x.shape[1:]}"
        )
    train = ArrayImageSplit(tr_x[:, None], tr_y)
    test = ArrayImageSplit(te_x[:, None], te_y)
    return ImageClassificationData(
        name="mnist",
        train=train,
        test=test,
        class_names=[str(d) for d in range(10)],
        in_channels=1,
        image_size=(int(tr_x.shape[1]), int(tr_x.shape[2])),
        meta={**meta, **split_meta(train.labels, test.labels, 10)},
    )
