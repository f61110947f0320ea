"""Feature extraction: cl_bench's data path vs a bare torchvision pipeline doing the same work.

    python benchmarks/extraction.py [--n 192] [--batch 32] [--workers 0,1] [--repeat 2] [--threads 1]

Data: a synthetic ImageFolder of ``n`` ImageNet-like JPEGs (about 500×375, smooth random
content at quality 90, ~40–120 KB each, sizes varying a little) in 4 class folders. Both sides
decode, resize the shorter side to 256 (bilinear), centre-crop 224, scale to [0, 1] floats,
and run the same model forward in batches of ``batch``:

- peer: ``torchvision.datasets.ImageFolder`` + ``DataLoader(num_workers=W)`` + forward, the
  features gathered in a list and concatenated;
- ours: the ``imagefolder`` dataset through the engine's path (``Feeder`` with W workers,
  ``extract_entry`` streaming to a chunked cache entry that is fsync'ed per chunk).

Models: ``resnet50`` (torchvision, random weights, 2048-d, what an ImageNet user runs) and
``pool`` (16×16 average pooling, 768-d: nearly free, so decoding dominates and the data path's
own overhead and the workers' speed-up show). Sides alternate within each repeat; best of
``repeat``. Wall time and CPU time (this process plus its finished loader workers) are both
reported: on a machine whose cores other jobs keep busy, wall time measures the scheduler's
share, CPU time the work done. Features of both sides are checked to be bit-identical. Also printed: the
per-image decode cost on one core and ResNet-50's per-image forward cost at the thread count,
the inputs of the ImageNet arithmetic in RESULTS.md.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cl_bench.cache import Cache  # noqa: E402
from cl_bench.data.image.imagefolder import load as load_imagefolder  # noqa: E402
from cl_bench.extract import extract_entry, image_plan  # noqa: E402
from cl_bench.feed import Feeder  # noqa: E402


def write_tree(root: Path, n: int, classes: int = 4) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = 500 - int(rng.integers(0, 40)), 375 - int(rng.integers(0, 30))
        coarse = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC).filter(ImageFilter.GaussianBlur(1))
        pix = np.asarray(img, dtype=np.int16) + rng.integers(-12, 12, (h, w, 3))
        folder = root / "tree" / "train" / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pix, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    for c in range(classes):  # the loader wants a val split too
        (root / "tree" / "val" / f"c{c}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / "tree" / "val" / f"c{c}" / "x.jpg")


def make_model(name: str) -> torch.nn.Module:
    if name == "resnet50":
        import torchvision

        torch.manual_seed(0)
        m = torchvision.models.resnet50(weights=None)
        m.fc = torch.nn.Identity()
        return m.eval()
    return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(16), torch.nn.Flatten()).eval()


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (loader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args) -> tuple[float, float, np.ndarray]:
    """(wall s, CPU s including finished workers, features) of ``fn(*args)``."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    feats = fn(*args)
    return time.perf_counter() - t0, cpu_seconds() - c0, feats


def bare(root: Path, model: torch.nn.Module, workers: int, batch: int) -> np.ndarray:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.PILToTensor(), T.ConvertImageDtype(torch.float32)])
    ds = ImageFolder(str(root / "tree" / "train"), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers)
    out = []
    with torch.no_grad():
        for x, _ in loader:
            out.append(model(x))
    return torch.cat(out).numpy()


def ours(root: Path, model: torch.nn.Module, workers: int, batch: int, cache: Path, tag: str) -> np.ndarray:
    data = load_imagefolder({"root": "tree"}, root)
    cpu = torch.device("cpu")
    with Feeder(workers, cpu, datasets=[data.train]) as feeder:
        plan = image_plan(model, data.train, cpu, feeder, batch)
        entry, _ = Cache(cache).stored_features(
            tag.ljust(64, "0"), lambda folder: extract_entry(folder, model, data.train, cpu, feeder, plan=plan))
    return entry.load()


def decode_cost(root: Path, n: int) -> tuple[float, float]:
    """(wall, CPU) seconds per image to open, decode, resize and crop one JPEG in this process.
    CPU time is what the ImageNet arithmetic uses: it does not grow when other jobs share the core."""
    data = load_imagefolder({"root": "tree"}, root)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        data.train[i]
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def forward_cpu_cost(model: torch.nn.Module, batch: int) -> float:
    """CPU seconds per image of the model's forward on a [batch, 3, 224, 224] input (best of 2)."""
    x = torch.rand(batch, 3, 224, 224)
    best = float("inf")
    with torch.no_grad():
        for _ in range(2):
            c0 = time.process_time()
            model(x)
            best = min(best, (time.process_time() - c0) / batch)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=192)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", default="0,1")
    ap.add_argument("--models", default="pool,resnet50")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    workers = [int(w) for w in a.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, a.n)
        sizes = [p.stat().st_size for p in (root / "tree" / "train").rglob("*.jpg")]
        print(f"{a.n} JPEGs, mean {np.mean(sizes) / 1e3:.0f} KB; batch {a.batch}; {a.threads} thread(s)")
        wall, cpu = min(decode_cost(root, min(a.n, 64)) for _ in range(2))
        print(f"decode+resize+crop per image: {1e3 * wall:.2f} ms wall, {1e3 * cpu:.2f} ms CPU "
              f"({1 / cpu:.0f} images/s per core)")
        print("| model | workers | bare wall s | ours wall s | ours/bare wall | bare CPU s | ours CPU s "
              "| ours/bare CPU | identical |")
        print("|---|---|---|---|---|---|---|---|---|")
        best_ours: dict[tuple[str, int], float] = {}
        for name in a.models.split(","):
            model = make_model(name)
            for w in workers:
                tb, to, cb, co = [], [], [], []
                same = True
                for r in range(a.repeat):
                    t, c, fb = timed(bare, root, model, w, a.batch)
                    tb.append(t)
                    cb.append(c)
                    t, c, fo = timed(ours, root, model, w, a.batch, root / "cache", f"{name}{w}{r}")
                    to.append(t)
                    co.append(c)
                    same &= fb.tobytes() == fo.tobytes()
                best_ours[(name, w)] = min(to)
                print(f"| {name} | {w} | {min(tb):.2f} | {min(to):.2f} | {min(to) / min(tb):.3f} | {min(cb):.2f} | "
                      f"{min(co):.2f} | {min(co) / min(cb):.3f} | {'yes' if same else 'NO'} |", flush=True)
            if len(workers) > 1:
                w0, w1 = workers[0], workers[-1]
                print(f"{name}: --workers {w1} over --workers {w0} (ours): "
                      f"{best_ours[(name, w0)] / best_ours[(name, w1)]:.2f}x")
            if name == "resnet50":
                print(f"resnet50 forward per image at {a.threads} thread(s): "
                      f"{1e3 * forward_cpu_cost(model, a.batch):.0f} ms CPU")


if __name__ == "__main__":
    main()
