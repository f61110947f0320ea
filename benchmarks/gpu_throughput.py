"""One short throughput measurement each for ResNet-50 feature extraction and the R50-C4 detector
(the second half of ``benchmarks/gpu_rehearsal.sh``).

    python benchmarks/gpu_throughput.py [--device cuda] [--dry] [--out rows.md]

- ``resnet50 extraction``: the engine's own path (``imagefolder`` loader, ``Feeder`` with
  ``--workers`` loader workers, ``extract_entry`` streaming into a cache entry) over a synthetic
  ImageFolder of ``--n`` ImageNet-like JPEGs (about 500×375), resized to 256 / centre-cropped to
  224, a random-weight torchvision ResNet-50 (2048-d), batches of ``--batch``; beside it the peer
  ceiling: the same model's bare forward on a ready [batch, 3, 224, 224] tensor on the device
  (no decoding), and the ratio (how much of the model's speed the data path keeps);
- ``R50-C4 detector``: the ``voc07-det-c4`` task's own detection protocol (``run_detection``:
  Faster R-CNN R50-C4 with the extra norm, SyncBN, ROIAlignV2, 480–800 px multi-scale training,
  800 px test) around a random-weight ResNet-50 on the real VOC2007 sample images of
  ``../shared/data`` — ``--det-iters`` training iterations of ``--det-batch`` images (the
  protocol's own images/s, first iteration included) and prediction over the sample's test images.

``--dry``: on the CPU, a ResNet-50 layout reduced to one block per stage at width 8, a few
images, one detector iteration and one test image — to check the script end to end without a GPU.
Prints (and with ``--out`` writes) table rows in the rehearsal table's columns (CPU s left empty).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.extraction import write_tree  # noqa: E402
from cl_bench import components  # noqa: E402
from cl_bench.budget import Budget, apply_budget  # noqa: E402
from cl_bench.cache import Cache  # noqa: E402
from cl_bench.data.image.imagefolder import load as load_imagefolder  # noqa: E402
from cl_bench.extract import extract_entry, image_plan  # noqa: E402
from cl_bench.feed import Feeder  # noqa: E402
from cl_bench.protocols.base import RunContext  # noqa: E402
from cl_bench.protocols.detection import run_detection  # noqa: E402
from cl_bench.registry import Registry  # noqa: E402
from cl_bench.specs import validate_params  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
REDUCED_R50 = {"blocks": [1, 1, 1, 1], "width": 8}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resnet50(dry: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return components.get("arch", "resnet50")(REDUCED_R50 if dry else {}, in_channels=3, image_size=(224, 224))


def extraction(device: torch.device, n: int, batch: int, workers: int, dry: bool) -> list[tuple[str, str, str, float]]:
    """(row name, what, images/s text, wall s) for the engine's extraction and the bare forward."""
    model = resnet50(dry).to(device).eval()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, n)
        data = load_imagefolder({"root": "tree"}, root)
        x = torch.rand(batch, 3, 224, 224, device=device)
        with torch.no_grad():
            model(x)  # warm-up: kernels chosen, memory allocated
        sync(device)
        t0 = time.perf_counter()
        with Feeder(workers, device, datasets=[data.train]) as feeder:
            plan = image_plan(model, data.train, device, feeder, batch)
            Cache(root / "cache").stored_features("0" * 64, lambda folder: extract_entry(
                folder, model, data.train, device, feeder, plan=plan))
        sync(device)
        ours = time.perf_counter() - t0
        reps = max(1, n // batch)
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(reps):
                model(x)
        sync(device)
        bare = time.perf_counter() - t0
    ours_ips, bare_ips = n / ours, reps * batch / bare
    what = f"{'reduced ' if dry else ''}ResNet-50, {n} JPEGs, batch {batch}, {workers} workers"
    rows.append(("throughput: resnet50 extraction (engine)", what,
                 f"{ours_ips:.1f} images/s ({ours_ips / bare_ips:.2f}x of bare forward)", ours))
    rows.append(("throughput: resnet50 bare forward (peer ceiling)", f"224 px tensor on device, batch {batch}",
                 f"{bare_ips:.1f} images/s", bare))
    return rows


def detector(device: torch.device, iters: int, batch: int, dry: bool) -> list[tuple[str, str, str, float]]:
    """(row name, what, images/s text, wall s) for the voc07-det-c4 detector's training and prediction."""
    task = Registry().task("voc07-det-c4")
    data = components.get("dataset", task.dataset.name)(task.dataset.params, SHARED_DATA / "voc_coco_samples")
    protocol = components.get("protocol", task.protocol.name)
    params = validate_params(protocol.params, {**task.protocol.params, "iterations": iters, "batch_size": batch,
                                               "lr_steps": [], "precise_bn_iters": 0, "num_workers": 0},
                             "gpu_throughput")
    if dry:
        data = apply_budget(protocol, params, data, Budget(limit=1)).data
    t0 = time.perf_counter()
    result = run_detection(resnet50(dry), data, params, RunContext(device, 0, extract=None))
    wall = time.perf_counter() - t0
    ex = result.extras
    sides = ex["test_input_sides"]["shortest"]
    return [("throughput: R50-C4 detector training", f"{'reduced ' if dry else ''}R50-C4, {iters} iterations x "
             f"{batch} VOC images, 480-800 px", f"{ex['train']['images_per_s']:.2f} images/s", ex["train"]["train_s"]),
            ("throughput: R50-C4 detector prediction", f"{ex['n_test']} VOC test images at {sides[1]} px",
             f"{ex['n_test'] / ex['predict_s']:.2f} images/s", wall - ex["train"]["train_s"])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dry", action="store_true", help="tiny CPU-sized run: checks the script, measures nothing useful")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--det-iters", type=int, default=20)
    ap.add_argument("--det-batch", type=int, default=4)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.dry:
        a.n, a.batch, a.workers, a.det_iters, a.det_batch = 8, 4, 0, 1, 1
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_throughput: --device cuda, but torch sees no CUDA device; use --device cpu --dry to check the "
              "script on a CPU", file=sys.stderr)
        return 2
    rows = extraction(device, a.n, a.batch, a.workers, a.dry) + detector(device, a.det_iters, a.det_batch, a.dry)
    text = "".join(f"| {name} | {what} | {value} | {wall:.1f} | |\n" for name, what, value, wall in rows)
    print(text, end="")
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
