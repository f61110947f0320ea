"""``stl10``: the official STL-10 binary release ``DATA_ROOT/<root>/stl10_binary/``.

Files: ``train_X.bin`` / ``test_X.bin`` (uint8, 3 x 96 x 96 per image, each channel stored
column-major - the layout of the MATLAB arrays it was exported from), ``train_y.bin`` /
``test_y.bin`` (one uint8 label per image, 1..10), ``class_names.txt``. The 100,000-image
``unlabeled_X.bin`` is not read (this loader serves supervised evaluation: 5,000 train /
8,000 test). Images are returned as [N, 3, 96, 96] (channel, row, column).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from cl_bench.bounded_io import MAX_DATA_TEXT_BYTES, read_bytes, read_text
from cl_bench.components import register
from cl_bench.data.splits import split_meta
from cl_bench.data.image.types import ArrayImageSplit, ImageClassificationData
from cl_bench.errors import ClBenchError
from cl_bench.specs import validate_params

SIDE = 96
PIXELS = 3 * SIDE * SIDE
CLASS_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")


MAX_SPLIT_BYTES = 2**30  # the labelled train / test image files are 138 / 221 MB


class Stl10Params(BaseModel):
    """``root``: folder under the data root that holds ``stl10_binary/`` (default: the data root)."""

    model_config = ConfigDict(extra="forbid")

    root: str = ""


def decode_images(data: bytes, source: str) -> np.ndarray:
    """STL-10 ``*_X.bin`` bytes -> uint8 [N, 3, 96, 96] in (channel, row, column) order."""
    if len(data) == 0 or len(data) % PIXELS:
        raise ClBenchError(
            f"{source}: {len(data)} bytes is not a whole number of {PIXELS}-byte STL-10 images; "
            "the file is truncated - re-download it"
        )
    # Stored as [N, C, column, row]: swap the last two axes.
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, 3, SIDE, SIDE).transpose(0, 1, 3, 2).copy()


def decode_labels(data: bytes, source: str) -> np.ndarray:
    """STL-10 ``*_y.bin`` bytes (labels 1..10) -> int64 labels 0..9."""
    y = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise ClBenchError(
            f"{source}: labels must be 1..10, found {int(y.min())}..{int(y.max())}; re-download it"
        )
    return y - 1


def _read(path: Path) -> bytes:
    return read_bytes(path, MAX_SPLIT_BYTES, "STL-10 file")


def _split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    x = decode_images(_read(x_path), str(x_path))
    y = decode_labels(_read(y_path), str(y_path))
    if len(x) != len(y):
        raise ClBenchError(f"{x_path} has {len(x)} images but {y_path} has {len(y)} labels")
    return x, y


@register("dataset", "stl10")
def load(params: dict[str, Any] | None, data_root: Path | None) -> ImageClassificationData:
    """STL-10 labelled train (5,000) / test (8,000) 96x96 RGB images, 10 classes."""
    p = validate_params(Stl10Params, params, "dataset 'stl10' params")
    base = f"DATA_ROOT/{p.root}/" if p.root else "DATA_ROOT/"
    layout = f"expected {base}stl10_binary/{{{','.join(FILES)}}} (the binary release); pass --data-root"
    if data_root is None:
        raise ClBenchError(f"dataset 'stl10' needs a data root: {layout} (or set CLBENCH_DATA)")
    folder = (Path(data_root) / p.root if p.root else Path(data_root)) / "stl10_binary"
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise ClBenchError(f"STL-10 not found ({folder} lacks {', '.join(missing)}): {layout}")
    tr_x, tr_y = _split(folder, "train")
    te_x, te_y = _split(folder, "test")
    names_path = folder / "class_names.txt"
    names = CLASS_NAMES
    if names_path.is_file():
        text = read_text(names_path, MAX_DATA_TEXT_BYTES, "class-names file")
        names = [s.strip() for s in text.splitlines() if s.strip()]
        if len(names) != 10:
            raise ClBenchError(f"{names_path} lists {len(names)} classes, expected 10")
    train, test = ArrayImageSplit(tr_x, tr_y), ArrayImageSplit(te_x, te_y)
    return ImageClassificationData(
        name="stl10",
        train=train,
        test=test,
        class_names=names,
        in_channels=3,
        image_size=(SIDE, SIDE),
        meta={"folder": str(folder), "files": list(FILES), **split_meta(tr_y, te_y, 10)},
    )
