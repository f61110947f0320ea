"""On-disk image-classification formats: MNIST idx files and torchvision-style image folders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cl_bench import components
from cl_bench.data.image.mnist import read_idx
from cl_bench.errors import ClBenchError

from tests.conftest import SHARED_DATA

REAL_DATA_ROOT = SHARED_DATA  # ../shared/data beside the checkout; holds mnist/t10k-{images-idx3,labels-idx1}-ubyte.gz


def mnist(params: dict, root: Path | None):
    return components.get("dataset", "mnist")(params, root)


def imagefolder(params: dict, root: Path | None):
    return components.get("dataset", "imagefolder")(params, root)


# ---------------------------------------------------------------- MNIST idx


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    """The official idx layout: >u4 magic, >u4 per dimension, then the unsigned bytes."""
    payload = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload += array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist(root: Path, n_train: int = 40, n_test: int = 30, gz: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": np.arange(n_train) % 10,
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": (np.arange(n_test) * 3) % 10,
    }
    write_idx(folder / f"train-images-idx3-ubyte{ext}", arrays["train_x"], 2051)
    write_idx(folder / f"train-labels-idx1-ubyte{ext}", arrays["train_y"], 2049)
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", arrays["test_x"], 2051)
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", arrays["test_y"], 2049)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_official_idx_files(tmp_path: Path, gz: bool) -> None:
    arrays = make_mnist(tmp_path, gz=gz)
    data = mnist({}, tmp_path)
    assert np.array_equal(data.train.images[:, 0], arrays["train_x"])
    assert np.array_equal(data.train.labels, arrays["train_y"])
    assert np.array_equal(data.test.images[:, 0], arrays["test_x"])
    assert np.array_equal(data.test.labels, arrays["test_y"])
    assert data.in_channels == 1 and data.image_size == (28, 28) and data.num_classes == 10
    x, y = data.test[5]
    assert x.shape == (1, 28, 28) and y == 5
    assert torch.allclose(x[0], torch.from_numpy(arrays["test_x"][5]).float() / 255)
    assert data.meta["train_size"] == 40 and data.meta["test_class_counts"] == [3] * 10


def test_mnist_mixed_gz_and_raw_and_raw_preferred(tmp_path: Path) -> None:
    arrays = make_mnist(tmp_path, gz=True)
    # a raw copy next to the .gz of the labels is read instead of the .gz
    write_idx(tmp_path / "mnist" / "t10k-labels-idx1-ubyte", (arrays["test_y"] + 1) % 10, 2049)
    data = mnist({}, tmp_path)
    assert np.array_equal(data.test.labels, (arrays["test_y"] + 1) % 10)


def test_mnist_fingerprint_tracks_content(tmp_path: Path) -> None:
    make_mnist(tmp_path / "a", seed=0)
    make_mnist(tmp_path / "b", seed=0, gz=False)
    make_mnist(tmp_path / "c", seed=1)
    fa = mnist({}, tmp_path / "a").fingerprint
    assert fa == mnist({}, tmp_path / "b").fingerprint  # same pixels, other compression
    assert fa != mnist({}, tmp_path / "c").fingerprint


def test_mnist_real_t10k_file() -> None:
    images = read_idx(REAL_DATA_ROOT / "mnist" / "t10k-images-idx3-ubyte.gz", 2051)
    labels = read_idx(REAL_DATA_ROOT / "mnist" / "t10k-labels-idx1-ubyte.gz", 2049)
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert labels[0] == 7
    with pytest.raises(ClBenchError, match="allow_test_only_split"):
        mnist({}, REAL_DATA_ROOT)
    data = mnist({"allow_test_only_split": True}, REAL_DATA_ROOT)
    assert len(data.train) + len(data.test) == 10000
    both = np.concatenate([data.train.labels, data.test.labels])
    assert np.array_equal(np.bincount(both), np.bincount(labels))
    expected_test = [int(np.floor(c * 0.3 + 0.5)) for c in np.bincount(labels)]
    assert data.meta["test_class_counts"] == expected_test
    # pixels stay paired with their labels through the split; the file's first image is a 7
    rows = {img.tobytes(): int(lab) for img, lab in zip(images, labels)}
    for split in (data.train, data.test):
        for i in range(0, len(split), 97):
            assert rows[split.images[i, 0].tobytes()] == split.labels[i]
    where = [
        (s, i)
        for s in (data.train, data.test)
        for i in range(len(s))
        if np.array_equal(s.images[i, 0], images[0])
    ]
    assert [int(s.labels[i]) for s, i in where] == [7]


def test_mnist_test_only_split_is_stratified_and_fixed(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 10)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (100, 28, 28)), 2051)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels, 2049)
    a = mnist({"allow_test_only_split": True, "test_fraction": 0.2}, tmp_path)
    b = mnist({"allow_test_only_split": True, "test_fraction": 0.2}, tmp_path)
    assert a.meta["test_class_counts"] == [2] * 10 and a.meta["train_class_counts"] == [8] * 10
    assert a.fingerprint == b.fingerprint
    assert (
        a.fingerprint
        != mnist({"allow_test_only_split": True, "test_fraction": 0.2, "split_seed": 1}, tmp_path).fingerprint
    )


def test_mnist_wrong_magic(tmp_path: Path) -> None:
    arrays = make_mnist(tmp_path)
    write_idx(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", arrays["train_x"].reshape(-1), 2049)
    with pytest.raises(ClBenchError, match="magic number is 2049, expected 2051"):
        mnist({}, tmp_path)


def test_mnist_truncated_and_trailing_bytes(tmp_path: Path) -> None:
    make_mnist(tmp_path, gz=False)
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(good[:-100])
    with pytest.raises(ClBenchError, match="truncated"):
        mnist({}, tmp_path)
    path.write_bytes(good + b"\0")
    with pytest.raises(ClBenchError, match="trailing bytes"):
        mnist({}, tmp_path)
    path.write_bytes(good[:10])
    with pytest.raises(ClBenchError, match="truncated idx header"):
        mnist({}, tmp_path)


def test_mnist_corrupt_gzip(tmp_path: Path) -> None:
    make_mnist(tmp_path)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ClBenchError, match="train-labels-idx1-ubyte.gz is not a valid gzip stream"):
        mnist({}, tmp_path)


def test_mnist_count_mismatch_and_bad_labels(tmp_path: Path) -> None:
    arrays = make_mnist(tmp_path)
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", arrays["train_y"][:-1], 2049)
    with pytest.raises(ClBenchError, match="40 images but .* 39 labels"):
        mnist({}, tmp_path)
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", arrays["train_y"] + 5, 2049)
    with pytest.raises(ClBenchError, match="label 14 is not a digit"):
        mnist({}, tmp_path)


def test_mnist_missing_files_and_folders(tmp_path: Path) -> None:
    with pytest.raises(ClBenchError, match="pass --data-root"):
        mnist({}, None)
    with pytest.raises(ClBenchError, match="train-images-idx3-ubyte.gz.*pass --data-root"):
        mnist({}, tmp_path)
    (tmp_path / "mnist").mkdir()
    with pytest.raises(ClBenchError, match="no MNIST idx files"):
        mnist({}, tmp_path)
    make_mnist(tmp_path)
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(ClBenchError, match="has the train files but not t10k"):
        mnist({}, tmp_path)
    with pytest.raises(ClBenchError, match="unknown field 'allow_test_only'"):
        mnist({"allow_test_only": True}, tmp_path)


# ---------------------------------------------------------------- image folders


def save_png(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def make_tree(root: Path) -> None:
    """``root/toy/{train,val}/{cat,dog}``: RGB and grayscale PNGs of assorted sizes, plus junk."""
    base = root / "toy"
    save_png(base / "train/cat/a.png", (40, 30), 0)
    save_png(base / "train/cat/b.PNG", (30, 50), 1, "L")
    save_png(base / "train/dog/nested/c.png", (33, 33), 2)
    save_png(base / "train/dog/d.png", (64, 20), 3)
    (base / "train/dog/notes.txt").write_text("not an image")
    save_png(base / "val/cat/e.png", (36, 36), 4)
    save_png(base / "val/dog/f.png", (25, 45), 5)


def reference_transform(path: Path, resize: int, crop: int, mode: str) -> np.ndarray:
    """Shorter side -> resize (longer side truncated), bilinear; then the centred crop box."""
    img = Image.open(path).convert(mode)
    w, h = img.size
    new_w, new_h = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    img = img.resize((new_w, new_h), Image.BILINEAR)
    left, top = round((new_w - crop) / 2.0), round((new_h - crop) / 2.0)
    arr = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
    return arr.transpose(2, 0, 1) if arr.ndim == 3 else arr[None]


def test_imagefolder_classes_labels_and_transform(tmp_path: Path) -> None:
    make_tree(tmp_path)
    data = imagefolder({"root": "toy", "resize": 32, "crop": 24}, tmp_path)
    assert data.class_names == ["cat", "dog"] and data.in_channels == 3 and data.image_size == (24, 24)
    assert data.train.rel_paths == ["cat/a.png", "cat/b.PNG", "dog/d.png", "dog/nested/c.png"]
    assert data.train.labels.tolist() == [0, 0, 1, 1]
    assert data.test.rel_paths == ["cat/e.png", "dog/f.png"] and data.test.labels.tolist() == [0, 1]
    assert data.meta["train_class_counts"] == [2, 2] and data.meta["test_size"] == 2
    for split, folder in ((data.train, "train"), (data.test, "val")):
        for i, rel in enumerate(split.rel_paths):
            x, y = split[i]
            assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and y == split.labels[i]
            expected = reference_transform(tmp_path / "toy" / folder / rel, 32, 24, "RGB")
            assert np.abs(x.numpy() - expected).max() < 1e-6


def test_imagefolder_single_channel_and_custom_dirs(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "toy" / "val").rename(tmp_path / "toy" / "test")
    data = imagefolder({"root": "toy", "test_dir": "test", "resize": 20, "crop": 16, "channels": 1}, tmp_path)
    x, _ = data.test[1]
    assert data.in_channels == 1 and x.shape == (1, 16, 16)
    expected = reference_transform(tmp_path / "toy/test/dog/f.png", 20, 16, "L")
    assert np.abs(x.numpy() - expected).max() < 1e-6


def test_imagefolder_fingerprint(tmp_path: Path) -> None:
    make_tree(tmp_path)
    params = {"root": "toy", "resize": 32, "crop": 24}
    first = imagefolder(params, tmp_path).fingerprint
    assert imagefolder(params, tmp_path).fingerprint == first
    assert imagefolder({**params, "crop": 20}, tmp_path).fingerprint != first
    save_png(tmp_path / "toy/train/dog/g.png", (30, 30), 6)
    second = imagefolder(params, tmp_path).fingerprint
    assert second != first
    (tmp_path / "toy/train/dog/g.png").rename(tmp_path / "toy/train/dog/h.png")
    assert imagefolder(params, tmp_path).fingerprint != second


def test_imagefolder_is_lazy_and_reports_undecodable_files(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "toy/val/dog/f.png").write_bytes(b"\x89PNG broken")
    data = imagefolder({"root": "toy", "resize": 32, "crop": 24}, tmp_path)  # nothing decoded yet
    assert data.test[0][0].shape == (3, 24, 24)
    with pytest.raises(ClBenchError, match=r"cannot decode image .*f\.png"):
        data.test[1]


def test_imagefolder_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(ClBenchError, match="needs a data root"):
        imagefolder({"root": "toy"}, None)
    with pytest.raises(
        ClBenchError, match=r"toy does not exist: expected DATA_ROOT/toy/\{train,val\}/<class>"
    ):
        imagefolder({"root": "toy"}, tmp_path)
    (tmp_path / "toy" / "train").mkdir(parents=True)
    with pytest.raises(ClBenchError, match="train has no class folders"):
        imagefolder({"root": "toy"}, tmp_path)
    make_tree(tmp_path)
    (tmp_path / "toy/train/bird").mkdir()
    with pytest.raises(ClBenchError, match="bird has no images"):
        imagefolder({"root": "toy"}, tmp_path)
    save_png(tmp_path / "toy/train/bird/x.png", (10, 10), 9)
    with pytest.raises(ClBenchError, match=r"only in train: \['bird'\], only in val: \[\]"):
        imagefolder({"root": "toy"}, tmp_path)
    with pytest.raises(ClBenchError, match="split .*toy/test does not exist"):
        imagefolder({"root": "toy", "test_dir": "test"}, tmp_path)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "root"),
        ({"root": "toy", "crop": 300}, "crop"),
        ({"root": "toy", "channels": 2}, "channels"),
        ({"root": "toy", "size": 3}, "size"),
    ],
)
def test_imagefolder_bad_params_name_the_field(tmp_path: Path, params: dict, field: str) -> None:
    with pytest.raises(ClBenchError, match=field):
        imagefolder(params, tmp_path)
