"""Real-data loaders (CIFAR-10/100 binary + python, STL-10 binary, ImageNet-style folders) on
fixture files written here in the exact official on-disk formats, and the real task specs."""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cl_bench import components
from cl_bench.data.image.cifar import load_cifar10, load_cifar100
from cl_bench.data.image.restricted_pickle import loads_restricted
from cl_bench.data.image.stl10 import load as load_stl10
from cl_bench.errors import ClBenchError
from cl_bench.registry import PROJECT_ROOT, Registry
from cl_bench.specs import load_task
from cl_bench.params import validate_params

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- CIFAR binary


def _cifar_images(n: int) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def _write_cifar10_bin(folder: Path, per_batch: int = 3, n_test: int = 4) -> tuple[np.ndarray, ...]:
    """Official layout: each record = <1 label byte><1024 R><1024 G><1024 B>, rows row-major."""
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        x, y = _cifar_images(per_batch), RNG.integers(0, 10, per_batch).astype(np.uint8)
        (folder / f"data_batch_{i}.bin").write_bytes(
            b"".join(bytes([int(y[j])]) + x[j].tobytes() for j in range(per_batch))
        )
        xs.append(x)
        ys.append(y)
    tx, ty = _cifar_images(n_test), RNG.integers(0, 10, n_test).astype(np.uint8)
    (folder / "test_batch.bin").write_bytes(
        b"".join(bytes([int(ty[j])]) + tx[j].tobytes() for j in range(n_test))
    )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    return np.concatenate(xs), np.concatenate(ys), tx, ty


def test_cifar10_binary_reads_every_record_byte_exactly(tmp_path: Path) -> None:
    x, y, tx, ty = _write_cifar10_bin(tmp_path / "cifar-10-batches-bin")
    data = load_cifar10({}, tmp_path)
    assert data.name == "cifar10" and data.meta["format"] == "binary"
    assert data.class_names[1] == "automobile" and data.num_classes == 10
    got = data.train.images
    assert got.shape == (15, 3, 32, 32) and got.dtype == np.uint8
    # independent check: read single pixels straight from the file bytes
    raw = (tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin").read_bytes()
    for rec, (c, r, col) in [(0, (0, 0, 0)), (1, (1, 5, 31)), (2, (2, 31, 7))]:
        offset = rec * 3073 + 1 + c * 1024 + r * 32 + col
        assert got[3 + rec, c, r, col] == raw[offset]
        assert data.train.labels[3 + rec] == raw[rec * 3073]
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(data.train.labels, y)
    np.testing.assert_array_equal(data.test.images, tx)
    np.testing.assert_array_equal(data.test.labels, ty)
    item, label = data.test[0]
    assert isinstance(item, torch.Tensor) and item.shape == (3, 32, 32) and label == int(ty[0])
    assert torch.allclose(item, torch.from_numpy(tx[0]).float() / 255)


def test_cifar100_binary_fine_and_coarse_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    n = 5
    x, coarse, fine = _cifar_images(n), RNG.integers(0, 20, n), RNG.integers(0, 100, n)
    for name in ("train.bin", "test.bin"):
        (folder / name).write_bytes(
            b"".join(bytes([int(coarse[j]), int(fine[j])]) + x[j].tobytes() for j in range(n))
        )
    (folder / "fine_label_names.txt").write_text("\n".join(f"fine{i}" for i in range(100)))
    (folder / "coarse_label_names.txt").write_text("\n".join(f"coarse{i}" for i in range(20)))
    fine_data = load_cifar100({}, tmp_path)
    np.testing.assert_array_equal(fine_data.train.labels, fine)
    np.testing.assert_array_equal(fine_data.test.images, x)
    assert fine_data.num_classes == 100 and fine_data.class_names[7] == "fine7"
    coarse_data = load_cifar100({"label": "coarse"}, tmp_path)
    np.testing.assert_array_equal(coarse_data.train.labels, coarse)
    assert coarse_data.num_classes == 20 and coarse_data.name == "cifar100-coarse"


def test_cifar_truncated_binary_is_a_one_line_error(tmp_path: Path) -> None:
    _write_cifar10_bin(tmp_path / "cifar-10-batches-bin")
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ClBenchError, match="not a whole number of 3073-byte CIFAR records") as e:
        load_cifar10({}, tmp_path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "loader, folder", [(load_cifar10, "cifar-10-batches-bin"), (load_cifar100, "cifar-100-binary")]
)
def test_missing_cifar_names_the_layout(tmp_path: Path, loader, folder: str) -> None:
    with pytest.raises(ClBenchError) as e:
        loader({}, tmp_path)
    msg = str(e.value)
    assert folder in msg and "python version" in msg and "--data-root" in msg and "\n" not in msg
    with pytest.raises(ClBenchError, match="needs a data root"):
        loader({}, None)


# ---------------------------------------------------------------- CIFAR python (restricted pickle)


def _py2_str(b: bytes) -> bytes:
    """A Python 2 ``str`` as cPickle protocol 2 writes it (SHORT_BINSTRING / BINSTRING)."""
    if len(b) < 256:
        return b"U" + bytes([len(b)]) + b
    return b"T" + struct.pack("<I", len(b)) + b


def _py2_int(v: int) -> bytes:
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)


def _py2_uint8_array(a: np.ndarray) -> bytes:
    """A C-contiguous uint8 ndarray exactly as numpy 1.x under Python 2 pickles it (protocol 2)."""
    shape = b"(" + b"".join(_py2_int(s) for s in a.shape) + b"t"
    dtype = (
        b"cnumpy\ndtype\n"
        + _py2_str(b"u1")
        + b"\x89\x88\x87R"  # dtype('u1', False, True)
        + b"(K\x03"
        + _py2_str(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # BUILD its state
    )
    return (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + b"K\x00\x85"
        + _py2_str(b"b")
        + b"\x87R"  # _reconstruct(ndarray, (0,), 'b')
        + b"(K\x01"
        + shape
        + dtype
        + b"\x89"
        + _py2_str(a.tobytes())
        + b"tb"  # BUILD (1, shape, dtype, False, raw)
    )


def _py2_dict(items: list[tuple[bytes, bytes]]) -> bytes:
    return b"\x80\x02}(" + b"".join(_py2_str(k) + v for k, v in items) + b"u."


def _py2_list_of_ints(values: np.ndarray) -> bytes:
    return b"](" + b"".join(_py2_int(int(v)) for v in values) + b"e"


def _py2_list_of_str(values: list[bytes]) -> bytes:
    return b"](" + b"".join(_py2_str(v) for v in values) + b"e"


def _write_cifar10_py(folder: Path, per_batch: int = 2) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x, y = _cifar_images(per_batch), RNG.integers(0, 10, per_batch)
        blob = _py2_dict(
            [
                (b"batch_label", _py2_str(b"training batch 1 of 5")),
                (b"labels", _py2_list_of_ints(y)),
                (b"data", _py2_uint8_array(x.reshape(per_batch, -1))),
                (b"filenames", _py2_list_of_str([b"x_%d.png" % j for j in range(per_batch)])),
            ]
        )
        (folder / name).write_bytes(blob)
        xs.append(x)
        ys.append(y)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    (folder / "batches.meta").write_bytes(
        _py2_dict(
            [
                (b"num_cases_per_batch", _py2_int(per_batch)),
                (b"label_names", _py2_list_of_str(names)),
                (b"num_vis", b"M\x00\x0c"),  # BININT2 3072
            ]
        )
    )
    return np.concatenate(xs), np.concatenate(ys)


def test_py2_fixture_is_what_plain_pickle_reads() -> None:
    """The hand-written Python 2 pickle decodes (with the unrestricted stdlib) to what we meant."""
    a = _cifar_images(2).reshape(2, -1)
    blob = _py2_dict([(b"data", _py2_uint8_array(a)), (b"labels", _py2_list_of_ints(np.array([3, 300])))])
    ref = pickle.loads(blob, encoding="bytes")  # trusted: the bytes were built right here
    np.testing.assert_array_equal(ref[b"data"], a)
    assert ref[b"labels"] == [3, 300]
    ours = loads_restricted(blob, "fixture")
    np.testing.assert_array_equal(ours[b"data"], a)
    assert ours[b"labels"] == [3, 300]


def test_cifar10_python_version_through_restricted_unpickler(tmp_path: Path) -> None:
    x, y = _write_cifar10_py(tmp_path / "cifar-10-batches-py")
    data = load_cifar10({}, tmp_path)
    assert data.meta["format"] == "python"
    assert data.class_names[9] == "truck"
    np.testing.assert_array_equal(data.train.images, x[:10])
    np.testing.assert_array_equal(data.train.labels, y[:10])
    np.testing.assert_array_equal(data.test.images, x[10:])


def test_cifar100_python_version_written_by_python3(tmp_path: Path) -> None:
    """A re-pickled copy (Python 3, numpy 2, protocol 2: ``_codecs.encode`` for bytes) reads too."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    x = _cifar_images(3)
    fine, coarse = [5, 99, 0], [1, 19, 0]
    for name in ("train", "test"):
        batch = {
            b"filenames": [b"a.png"] * 3,
            b"fine_labels": fine,
            b"coarse_labels": coarse,
            b"data": x.reshape(3, -1),
            b"batch_label": b"train",
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {
        b"fine_label_names": [b"f%d" % i for i in range(100)],
        b"coarse_label_names": [b"c%d" % i for i in range(20)],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    data = load_cifar100({"format": "python"}, tmp_path)
    np.testing.assert_array_equal(data.train.labels, fine)
    np.testing.assert_array_equal(data.test.images, x)
    assert data.class_names[99] == "f99"
    assert load_cifar100({"format": "python", "label": "coarse"}, tmp_path).class_names[19] == "c19"


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what a malicious pickle does: call os.system on load
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code_and_objects(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10_py(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _RunsCode(marker)}, protocol=2))
    with pytest.raises(ClBenchError, match=r"refused to unpickle: global (posix|os)\.system is not allowed"):
        load_cifar10({"format": "python"}, tmp_path)
    assert not marker.exists()
    for evil in (
        pickle.dumps(np.array([{"a": 1}], dtype=object), protocol=2),  # object array
        pickle.dumps(io.BytesIO(b"x"), protocol=2),  # any class
        b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.",  # builtins.eval('1+1')
    ):
        with pytest.raises(ClBenchError, match="refused to unpickle"):
            loads_restricted(evil, "evil")


# ---------------------------------------------------------------- STL-10 binary


def _write_stl10(folder: Path, n_train: int = 3, n_test: int = 2) -> dict[str, np.ndarray]:
    """Official layout: per image 3 channels of 96x96 in column-major order; labels 1..10."""
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = RNG.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        x[0, 0, :10, :] = 255  # a bright top band: orientation is visible
        x[0, 0, 10:, :] = 0
        y = RNG.integers(1, 11, n).astype(np.uint8)
        col_major = b"".join(x[i, c].T.tobytes() for i in range(n) for c in range(3))
        (folder / f"{split}_X.bin").write_bytes(col_major)
        (folder / f"{split}_y.bin").write_bytes(y.tobytes())
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    (folder / "class_names.txt").write_text(
        "airplane\nbird\ncar\ncat\ndeer\ndog\nhorse\nmonkey\nship\ntruck\n"
    )
    return out


def test_stl10_binary_column_major_and_one_based_labels(tmp_path: Path) -> None:
    ref = _write_stl10(tmp_path / "stl10_binary")
    data = load_stl10({}, tmp_path)
    assert data.image_size == (96, 96) and data.class_names[7] == "monkey"
    np.testing.assert_array_equal(data.train.images, ref["train_x"])
    np.testing.assert_array_equal(data.train.labels, ref["train_y"].astype(np.int64) - 1)
    np.testing.assert_array_equal(data.test.images, ref["test_x"])
    raw = (tmp_path / "stl10_binary" / "train_X.bin").read_bytes()
    n, c, r, col = 1, 2, 5, 70  # byte offset of pixel (row r, column col): column-major
    assert data.train.images[n, c, r, col] == raw[n * 27648 + c * 9216 + col * 96 + r]
    assert data.train.images[0, 0, :10].min() == 255 and data.train.images[0, 0, 10:].max() == 0


def test_stl10_missing_and_bad_labels(tmp_path: Path) -> None:
    with pytest.raises(ClBenchError, match=r"stl10_binary/\{train_X.bin,train_y.bin,test_X.bin,test_y.bin\}"):
        load_stl10({}, tmp_path)
    _write_stl10(tmp_path / "stl10_binary")
    (tmp_path / "stl10_binary" / "test_y.bin").write_bytes(bytes([0, 3]))
    with pytest.raises(ClBenchError, match="labels must be 1..10"):
        load_stl10({}, tmp_path)


# ---------------------------------------------------------------- ImageNet-style folders and task specs

MY_TASKS = [
    "mnist-linear",
    "mnist-knn",
    "cifar10-linear",
    "cifar10-knn",
    "cifar100-linear",
    "cifar100-knn",
    "stl10-linear",
    "imagenet-linear",
    "imagenet-knn",
    "imagefolder-linear",
    "digits-fewshot",
]


@pytest.mark.parametrize("task_id", MY_TASKS)
def test_task_specs_name_real_components_with_valid_params(task_id: str) -> None:
    task = load_task(PROJECT_ROOT / "tasks" / f"{task_id}.yaml")
    protocol = components.get("protocol", task.protocol.name)
    validate_params(protocol.params, task.protocol.params, task.source)
    components.get("dataset", task.dataset.name)
    assert task.primary_metric in task.metrics
    assert task_id in Registry().task_ids()


def test_imagenet_task_preprocessing_is_resize256_centercrop224(tmp_path: Path) -> None:
    task = load_task(PROJECT_ROOT / "tasks" / "imagenet-linear.yaml")
    root = tmp_path / "imagenet"
    img = RNG.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)  # H=300, W=400
    for split in ("train", "val"):
        for wnid in ("n01440764", "n01443537"):
            (root / split / wnid).mkdir(parents=True)
            Image.fromarray(img).save(root / split / wnid / "a.png")
    data = components.get("dataset", task.dataset.name)(task.dataset.params, tmp_path)
    assert data.class_names == ["n01440764", "n01443537"] and data.image_size == (224, 224)
    x, _ = data.test[0]
    # independent: shorter side 300 -> 256 (bilinear), so 400 -> 341; then the central 224 x 224
    ref = Image.fromarray(img).resize((341, 256), Image.BILINEAR)
    left, top = round((341 - 224) / 2.0), round((256 - 224) / 2.0)
    ref_arr = np.asarray(ref.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    assert x.shape == (3, 224, 224)
    assert np.abs(x.permute(1, 2, 0).numpy() - ref_arr).max() <= 1 / 255 + 1e-6


def test_imagenet_missing_folder_names_the_layout(tmp_path: Path) -> None:
    task = load_task(PROJECT_ROOT / "tasks" / "imagenet-knn.yaml")
    with pytest.raises(ClBenchError, match=r"DATA_ROOT/imagenet/\{train,val\}/<class>/<image>"):
        components.get("dataset", task.dataset.name)(task.dataset.params, tmp_path)
