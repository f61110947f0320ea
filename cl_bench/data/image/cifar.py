"""``cifar10`` / ``cifar100``: the official CIFAR releases under ``DATA_ROOT``.

Binary version (preferred, read without any unpickling):

- CIFAR-10 ``cifar-10-batches-bin/``: ``data_batch_1.bin`` ... ``data_batch_5.bin``, ``test_batch.bin``
  (records of 1 label byte + 3,072 pixel bytes), ``batches.meta.txt`` (class names, one a line).
- CIFAR-100 ``cifar-100-binary/``: ``train.bin``, ``test.bin`` (records of 1 coarse + 1 fine label
  byte + 3,072 pixel bytes), ``fine_label_names.txt``, ``coarse_label_names.txt``.

Pixels are stored channel-planar (1,024 red, then green, then blue bytes, each row-major), so
a record reshapes directly to [3, 32, 32].

Python version (``cifar-10-batches-py/`` with ``data_batch_1`` ... ``test_batch``, ``batches.meta``;
``cifar-100-python/`` with ``train``, ``test``, ``meta``) is read only through
``restricted_pickle`` (dicts, lists, bytes and numpy arrays; nothing else is resolved).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from cl_bench.bounded_io import MAX_DATA_TEXT_BYTES, read_bytes, read_text
from cl_bench.components import register
from cl_bench.data.image.restricted_pickle import load_restricted
from cl_bench.data.splits import split_meta
from cl_bench.data.image.types import ArrayImageSplit, ImageClassificationData
from cl_bench.errors import ClBenchError
from cl_bench.specs import describe_validation_error, validate_params

PIXELS = 3 * 32 * 32
MAX_BINARY_BYTES = 2**30  # a CIFAR .bin batch is ~30-150 MB


@dataclass(frozen=True)
class CifarRelease:
    """Where one CIFAR release keeps its files, in both official versions."""

    name: str
    num_classes: int
    bin_dir: str
    bin_train: tuple[str, ...]
    bin_test: tuple[str, ...]
    py_dir: str
    py_train: tuple[str, ...]
    py_test: tuple[str, ...]
    label_bytes: int  # 1 (CIFAR-10) or 2 (CIFAR-100: coarse, fine)


CIFAR10 = CifarRelease(
    name="cifar10",
    num_classes=10,
    bin_dir="cifar-10-batches-bin",
    bin_train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    bin_test=("test_batch.bin",),
    py_dir="cifar-10-batches-py",
    py_train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    py_test=("test_batch",),
    label_bytes=1,
)
CIFAR100 = CifarRelease(
    name="cifar100",
    num_classes=100,
    bin_dir="cifar-100-binary",
    bin_train=("train.bin",),
    bin_test=("test.bin",),
    py_dir="cifar-100-python",
    py_train=("train",),
    py_test=("test",),
    label_bytes=2,
)


class CifarParams(BaseModel):
    """``root``: folder under the data root holding the official release folder (default: the
    data root itself). ``format``: ``auto`` takes the binary version when present.
    ``label`` (CIFAR-100 only): ``fine`` (100 classes) or ``coarse`` (20 superclasses)."""

    model_config = ConfigDict(extra="forbid")

    root: str = ""
    format: Literal["auto", "binary", "python"] = "auto"
    label: Literal["fine", "coarse"] = "fine"


def layout_of(release: CifarRelease, root: str) -> str:
    base = f"DATA_ROOT/{root}/" if root else "DATA_ROOT/"
    return (
        f"expected {base}{release.bin_dir}/{{{','.join(release.bin_train + release.bin_test)}}} "
        f"(binary version) or {base}{release.py_dir}/{{{','.join(release.py_train + release.py_test)}}} "
        "(python version); pass --data-root"
    )


def parse_binary_records(data: bytes, label_bytes: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], label bytes uint8 [N, label_bytes]) of a CIFAR ``.bin`` file."""
    record = label_bytes + PIXELS
    if len(data) == 0 or len(data) % record:
        raise ClBenchError(
            f"{source}: {len(data)} bytes is not a whole number of {record}-byte CIFAR records; "
            "the file is truncated or not this CIFAR release - re-download it"
        )
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32).copy(), raw[:, :label_bytes].copy()


def _read_binary(
    folder: Path, names: tuple[str, ...], release: CifarRelease, label: str
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in names:
        path = folder / name
        data = read_bytes(path, MAX_BINARY_BYTES, "CIFAR batch")
        x, y = parse_binary_records(data, release.label_bytes, str(path))
        images.append(x)
        labels.append(y[:, 0] if release.label_bytes == 1 or label == "coarse" else y[:, 1])
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def _read_names_txt(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [line.strip() for line in read_text(path, MAX_DATA_TEXT_BYTES, "label-names file").splitlines()
            if line.strip()]


def _get(d: Any, key: str, source: Path) -> Any:
    if not isinstance(d, dict):
        raise ClBenchError(
            f"{source}: expected a pickled dict, got {type(d).__name__}; is this CIFAR's python version?"
        )
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise ClBenchError(
        f"{source}: no '{key}' entry (has {', '.join(str(k) for k in list(d)[:6])}); re-download it"
    )


def _read_python(folder: Path, names: tuple[str, ...], label: str) -> tuple[np.ndarray, np.ndarray]:
    key = "labels" if label == "labels" else f"{label}_labels"
    images, labels = [], []
    for name in names:
        path = folder / name
        batch = load_restricted(path)
        data = np.asarray(_get(batch, "data", path))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
            raise ClBenchError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 [N, {PIXELS}]")
        y = np.asarray(_int_list(_get(batch, key, path), f"{path}: '{key}'"), dtype=np.int64)
        if y.shape != (len(data),):
            raise ClBenchError(f"{path}: {len(data)} images but {y.size} labels")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


_LABELS = TypeAdapter(list[Annotated[int, Field(strict=True, ge=0, le=255)]])


def _int_list(raw: Any, where: str) -> list[int]:
    """A pickled label list (or integer array) as ints; 1.7, "3" or a nested list is an error."""
    values = raw.tolist() if isinstance(raw, np.ndarray) and raw.dtype.kind in "iu" else raw
    try:
        return _LABELS.validate_python(values)
    except ValidationError as e:
        raise ClBenchError(describe_validation_error(where, e)) from None


def _python_names(folder: Path, release: CifarRelease, label: str) -> list[str] | None:
    meta_path = folder / ("batches.meta" if release.num_classes == 10 else "meta")
    if not meta_path.is_file():
        return None
    key = "label_names" if release.num_classes == 10 else f"{label}_label_names"
    names = _get(load_restricted(meta_path), key, meta_path)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise ClBenchError(f"{meta_path}: '{key}' must be a list of class-name strings")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _has(folder: Path, names: tuple[str, ...]) -> bool:
    return all((folder / n).is_file() for n in names)


def load_cifar(
    release: CifarRelease, params: dict[str, Any] | None, data_root: Path | None
) -> ImageClassificationData:
    """Both official splits of ``release`` in the binary or (restricted) python version."""
    p = validate_params(CifarParams, params, f"dataset '{release.name}' params")
    layout = layout_of(release, p.root)
    if release.num_classes == 10 and p.label != "fine":
        raise ClBenchError(f"dataset '{release.name}' params: 'label' applies to cifar100 only; remove it")
    if data_root is None:
        raise ClBenchError(f"dataset '{release.name}' needs a data root: {layout} (or set CLBENCH_DATA)")
    base = Path(data_root) / p.root if p.root else Path(data_root)
    bin_dir, py_dir = base / release.bin_dir, base / release.py_dir
    has_bin = _has(bin_dir, release.bin_train + release.bin_test)
    has_py = _has(py_dir, release.py_train + release.py_test)
    fmt = p.format if p.format != "auto" else ("binary" if has_bin else "python" if has_py else "")
    if fmt == "binary" and not has_bin or fmt == "python" and not has_py or not fmt:
        missing_in = bin_dir if fmt != "python" else py_dir
        raise ClBenchError(f"{release.name} not found (looked in {missing_in}): {layout}")
    # CIFAR-10 calls its single label "labels"; CIFAR-100 has fine_labels / coarse_labels.
    label = p.label if release.num_classes == 100 else "labels"
    if fmt == "binary":
        tr_x, tr_y = _read_binary(bin_dir, release.bin_train, release, p.label)
        te_x, te_y = _read_binary(bin_dir, release.bin_test, release, p.label)
        txt = "batches.meta.txt" if release.num_classes == 10 else f"{p.label}_label_names.txt"
        class_names = _read_names_txt(bin_dir / txt)
        folder, files = bin_dir, list(release.bin_train + release.bin_test)
    else:
        tr_x, tr_y = _read_python(py_dir, release.py_train, label)
        te_x, te_y = _read_python(py_dir, release.py_test, label)
        class_names = _python_names(py_dir, release, p.label)
        folder, files = py_dir, list(release.py_train + release.py_test)
    num_classes = 20 if release.num_classes == 100 and p.label == "coarse" else release.num_classes
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ClBenchError(
            f"{folder}: the label-names file lists {len(class_names)} classes, expected {num_classes}"
        )
    for y, which in ((tr_y, "train"), (te_y, "test")):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise ClBenchError(
                f"{folder}: {which} label {int(y.max())} is outside 0..{num_classes - 1}; re-download it"
            )
    train, test = ArrayImageSplit(tr_x, tr_y), ArrayImageSplit(te_x, te_y)
    name = release.name if num_classes == release.num_classes else f"{release.name}-coarse"
    return ImageClassificationData(
        name=name,
        train=train,
        test=test,
        class_names=class_names,
        in_channels=3,
        image_size=(32, 32),
        meta={"folder": str(folder), "format": fmt, "files": files, **split_meta(tr_y, te_y, num_classes)},
    )


@register("dataset", "cifar10")
def load_cifar10(params: dict[str, Any] | None, data_root: Path | None) -> ImageClassificationData:
    """CIFAR-10: 50,000 train / 10,000 test 32x32 RGB images, 10 classes."""
    return load_cifar(CIFAR10, params, data_root)


@register("dataset", "cifar100")
def load_cifar100(params: dict[str, Any] | None, data_root: Path | None) -> ImageClassificationData:
    """CIFAR-100: 50,000 train / 10,000 test 32x32 RGB images, 100 fine (or 20 coarse) classes."""
    return load_cifar(CIFAR100, params, data_root)
