"""The extraction data path: loader workers, precision, chunked cache entries that survive a kill."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cl_bench.cache import Cache
from cl_bench.data.image.imagefolder import load as load_imagefolder
from cl_bench.engine import RunOptions, run
from cl_bench.extract import autocast, extract_entry, extract_features, image_plan, writer_for
from cl_bench.feature_store import open_entry
from cl_bench.feed import Feeder
from cl_bench.registry import PROJECT_ROOT


def write_jpeg_tree(root: Path, per_class: int = 6, classes: int = 3, size: tuple[int, int] = (50, 37)) -> Path:
    """DATA_ROOT/tree/{train,val}/<class>/<i>.jpg with random-noise JPEGs (sizes vary a little)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / "tree" / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                w, h = size[0] + i, size[1] + c
                pix = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pix).save(folder / f"{i:03d}.jpg", quality=90)
    return root


def tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()
    )


class SlowPrinting(torch.nn.Module):
    """tiny_cnn that sleeps, then says "batch" on stdout, before each forward (the kill test's clock)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.inner, self.delay = tiny_cnn(), delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        print("batch", flush=True)
        return self.inner(x)


def _data(tmp_path: Path):
    return load_imagefolder({"root": "tree", "resize": 32, "crop": 28}, write_jpeg_tree(tmp_path / "data"))


def test_zero_and_two_workers_give_identical_features(tmp_path: Path) -> None:
    data = _data(tmp_path)
    model, cpu = tiny_cnn(), torch.device("cpu")
    plain = extract_features(model, data.train, cpu, batch_size=5, feeder=Feeder(0, cpu))
    with Feeder(2, cpu, datasets=[data.train, data.test]) as feeder:  # the persistent pool
        pooled = [extract_features(model, s, cpu, batch_size=5, feeder=feeder) for s in (data.train, data.test, data.train)]
    one_off = extract_features(model, data.train, cpu, batch_size=5, feeder=Feeder(2, cpu))
    assert plain.shape == (18, 32)
    assert np.array_equal(plain, pooled[0]) and np.array_equal(plain, pooled[2]) and np.array_equal(plain, one_off)
    assert np.array_equal(pooled[1], extract_features(model, data.test, cpu, batch_size=5))
    # the per-item path equals decoding every image and stacking them by hand
    by_hand = torch.stack([data.train[i][0] for i in range(len(data.train))])
    with torch.no_grad():
        assert np.array_equal(plain, model(by_hand).numpy())


def test_lazy_splits_pickle_and_read_the_same_after(tmp_path: Path) -> None:
    data = _data(tmp_path)
    again = pickle.loads(pickle.dumps(data.train))
    assert again.fingerprint == data.train.fingerprint
    assert torch.equal(again[4][0], data.train[4][0])


def test_engine_cache_entries_are_the_same_bytes_for_0_and_2_workers(tmp_path: Path, tiny_root: Path) -> None:
    """Through the engine: an image-folder task, features written by workers or not, same bytes."""
    write_jpeg_tree(tmp_path / "data")
    (tiny_root / "tasks" / "tiny-folder.yaml").write_text(
        "id: tiny-folder\nversion: 1\ndescription: jpeg tree (test fixture)\n"
        "dataset: {name: imagefolder, params: {root: tree, resize: 32, crop: 28}}\n"
        "protocol: {name: knn, params: {k: 3}}\nprimary_metric: top1\n"
    )
    from cl_bench.registry import Registry

    reg = Registry()
    task, method = reg.task("tiny-folder"), reg.method("tiny-random")
    outs = {}
    for w in (0, 2):
        opts = RunOptions(results_dir=tmp_path / f"r{w}", cache_dir=tmp_path / f"c{w}", data_root=tmp_path / "data",
                          workers=w, threads=1)
        outs[w] = run(task, method, opts)
    assert outs[0].record.metrics == outs[2].record.metrics
    assert (outs[0].record.loader_workers, outs[2].record.loader_workers) == (0, 2)
    assert outs[0].record.precision == "fp32" and outs[0].record.threads == 1
    blobs = {w: sorted(p.read_bytes() for p in (tmp_path / f"c{w}" / "features").rglob("data.bin")) for w in (0, 2)}
    assert len(blobs[0]) == 2 and blobs[0] == blobs[2]


def test_precision_enters_the_cache_key_and_the_record(tmp_path: Path, tiny_registry) -> None:
    task, method = tiny_registry.task("tiny-knn"), tiny_registry.method("tiny-random")
    base = dict(results_dir=tmp_path / "r", cache_dir=tmp_path / "c")
    a = run(task, method, RunOptions(**base))
    b = run(task, method, RunOptions(**base, precision="bf16"))
    assert b.feature_cache_misses == 2  # not the fp32 entries
    assert (a.record.precision, b.record.precision) == ("fp32", "bf16")
    assert len(list((tmp_path / "c" / "features").rglob("meta.json"))) == 4
    # bf16 autocast really ran in bf16: a matmul's output dtype inside the region
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


_CHILD = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {root!r})
    torch.set_num_threads(1)
    from cl_bench.cache import Cache
    from cl_bench.data.image.imagefolder import load
    from cl_bench.extract import extract_entry, image_plan
    from cl_bench.feature_store import EntryWriter
    from cl_bench.feed import Feeder
    from tests.test_data_path import SlowPrinting

    data = load({{"root": "tree", "resize": 32, "crop": 28}}, {data!r})
    model, cpu = SlowPrinting({delay}), torch.device("cpu")
    feeder = Feeder({workers}, cpu)
    resume = EntryWriter._resume
    EntryWriter._resume = lambda self: (resume(self), print("start", self.start, flush=True))[0]

    def extract(folder):
        plan = image_plan(model, data.train, cpu, feeder, batch_size=2)
        return extract_entry(folder, model, data.train, cpu, feeder, plan=plan, chunk_rows=4)

    Cache({cache!r}).stored_features("k" * 64, extract)
    print("done", flush=True)
""")


def _child(tmp_path: Path, cache: Path, delay: float, workers: int = 0) -> subprocess.Popen:
    code = _CHILD.format(root=str(PROJECT_ROOT), data=str(tmp_path / "data"), cache=str(cache), delay=delay,
                         workers=workers)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_kill_minus_9_mid_extraction_then_resume_gives_identical_features(tmp_path: Path) -> None:
    data = _data(tmp_path)  # 18 images: batches of 2, chunks of 4 rows -> 5 chunks
    ref = extract_features(tiny_cnn(), data.train, torch.device("cpu"), batch_size=2)
    cache = tmp_path / "cache"
    proc = _child(tmp_path, cache, delay=0.3, workers=1)
    batches = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        batches += line.startswith("batch")
        if batches == 6:  # 12 rows handed over: 3 chunks sealed (or being sealed), more in flight
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    folder = Cache(cache).features_dir("k" * 64)
    journal = (folder / "journal").read_text().split("\n")
    sealed = len([line for line in journal if line.strip()])
    assert 2 <= sealed < 5 and open_entry(folder) is None  # partial: not served as complete

    resumed = _child(tmp_path, cache, delay=0.0)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, out
    start = int(next(line for line in out.splitlines() if line.startswith("start")).split()[1])
    assert start == sealed * 4  # resumed at the first missing chunk: at most one chunk (4 rows) redone
    assert 12 - start <= 4
    entry = open_entry(folder)
    assert entry is not None and np.array_equal(entry.load(), ref)
    assert entry.load().tobytes() == ref.tobytes()


def test_a_corrupt_or_torn_entry_is_detected_and_rebuilt(tmp_path: Path) -> None:
    data = _data(tmp_path)
    model, cpu = tiny_cnn(), torch.device("cpu")
    cache = Cache(tmp_path / "cache")
    calls = []

    def extract(folder: Path):
        calls.append(folder)
        plan = image_plan(model, data.test, cpu, Feeder(0, cpu), batch_size=2)
        return extract_entry(folder, model, data.test, cpu, Feeder(0, cpu), plan=plan, chunk_rows=4)

    first, hit = cache.stored_features("a" * 64, extract)
    ref = first.load()
    assert not hit and len(calls) == 1
    data_bin = cache.features_dir("a" * 64) / "data.bin"
    raw = bytearray(data_bin.read_bytes())
    raw[100] ^= 0xFF  # one flipped byte in chunk 0
    data_bin.write_bytes(bytes(raw))
    again, hit = cache.stored_features("a" * 64, extract)
    assert not hit and len(calls) == 2 and np.array_equal(again.load(), ref)
    # a journal line torn by a kill mid-write is ignored, and its chunk redone
    journal = cache.features_dir("a" * 64) / "journal"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:3])
    seen = []
    resumed = writer_for(image_plan(model, data.test, cpu, Feeder(0, cpu), batch_size=2), data.test,
                         journal.parent, chunk_rows=4)
    seen.append(resumed.start)
    resumed.close()
    assert seen == [(len(lines) - 1) * 4]  # the torn chunk is the first one to redo
    again, hit = cache.stored_features("a" * 64, extract)
    assert not hit and np.array_equal(again.load(), ref)
    meta = json.loads((cache.features_dir("a" * 64) / "meta.json").read_text())
    assert meta["rows"] == 18 and meta["chunk_rows"] == 4 and meta["dtype"] == "float32"


@pytest.mark.parametrize("workers", ["x", "-1"])
def test_bad_worker_count_is_one_line(workers: str, capsys) -> None:
    from cl_bench.cli import main

    assert main(["run", "--method", "random", "--task", "digits-knn", "--workers", workers]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clbench: error: --workers must be 'auto' or an integer") and "\n" not in err


class _Refusing(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        from cl_bench.errors import ClBenchError

        raise ClBenchError(f"cannot decode image {i}.jpg; replace it")


def test_a_worker_refusal_reaches_the_user_as_its_own_one_line_message() -> None:
    """torch re-raises a worker's error with the worker's whole traceback as its message."""
    from cl_bench.errors import ClBenchError

    with Feeder(workers=1, device=torch.device("cpu")) as feeder, pytest.raises(ClBenchError) as e:
        list(feeder.loader(_Refusing(), 0, 2))
    assert str(e.value) == "cannot decode image 0.jpg; replace it"


def test_table_keeps_other_precisions_apart_and_marked(tmp_path: Path, tiny_registry) -> None:
    from cl_bench.report.table import render, summarize

    task, method = tiny_registry.task("tiny-knn"), tiny_registry.method("tiny-random")
    results = tmp_path / "r"  # one results tree holding both precisions of one cell
    for precision, seeds in (("fp32", (0, 1)), ("bf16", (2, 3))):
        for seed in seeds:
            run(task, method, RunOptions(seed=seed, results_dir=results, cache_dir=tmp_path / "c", precision=precision))
    summary = summarize(results, tiny_registry)
    cells = {c.method: c for c in summary.cells}
    assert set(cells) == {"tiny-random", "tiny-random [bf16]"}
    assert (cells["tiny-random"].seeds, cells["tiny-random [bf16]"].seeds) == ([0, 1], [2, 3])
    assert "[bf16] / [fp16]: features extracted at that precision" in render(summary)


def test_zip_image_source_pickles_without_its_handle_and_reopens(tmp_path: Path) -> None:
    import io
    import zipfile

    from cl_bench.data.image_text.mmeb import ImageSource

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 20, 30)).save(buf, format="PNG")
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as z:
        z.writestr("eval_images/a.png", buf.getvalue())
    source = ImageSource(zip_path=tmp_path / "images.zip")
    first = source.read("a.png")  # opens the zip in this process
    again = pickle.loads(pickle.dumps(source))  # what a spawned loader worker receives
    assert again._zip is None and again.read("a.png") == first == buf.getvalue()
    source._zip_pid = -1  # as seen from a forked worker: the inherited handle is not reused
    assert source.read("a.png") == first and source._zip_pid == os.getpid()


def test_stored_entry_maps_with_numpy(tmp_path: Path) -> None:
    from cl_bench.feature_store import EntryWriter

    a = np.arange(60, dtype=np.float32).reshape(20, 3)
    writer = EntryWriter(tmp_path / "e", 20, 8, None)
    writer.write(a)
    entry = writer.finish()
    assert np.array_equal(entry.memmap(), a) and np.array_equal(entry.take(np.array([19, 2])), a[[19, 2]])
