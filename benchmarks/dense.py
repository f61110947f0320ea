"""Detector / segmenter training throughput (images/s), ours vs torchvision's own detector.

    python benchmarks/dense.py [--device cpu|cuda] [--iters 8] [--size 96] [--batch 4] [--append]

Timed: forward + backward + SGD step on random images with 1-3 random boxes each (after one
warm-up pass), best of ``--repeat`` runs of ``--iters`` iterations:

- ``ours fpn resnet18``: cl_bench's detector (``cl_bench.protocols.dense.detectors``) around a resnet18
  encoder, FPN over res2..res5, Faster R-CNN;
- ``torchvision fpn resnet18`` (the peer): ``FasterRCNN(resnet_fpn_backbone("resnet18"))`` with
  the same sizes, BN fine-tuned, all layers trainable — the ratio shows the adapter's overhead;
- ``ours c4 small-resnet`` / ``ours fpn+mask small-resnet``: the scenes-voc-det / scenes-coco-det
  configurations of the embedded tasks;
- ``ours fcn small-resnet``: the scenes-seg segmenter.
``--append`` adds the table to benchmarks/RESULTS.md (section "dense training").
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from cl_bench import components
from cl_bench.models.image.dense_trunk import trunk_of
from cl_bench.protocols.dense.detectors import DetectorConfig, build_detector
from cl_bench.protocols.dense.seg_heads import build_segmenter

SMALL = {"rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300, "rpn_batch_size_per_image": 128,
         "box_batch_size_per_image": 64}


def batch(n: int, size: int, gen: torch.Generator, device: torch.device, masks: bool = False) -> tuple[list, list]:
    images, targets = [], []
    for _ in range(n):
        images.append(torch.rand(3, size, size, generator=gen).to(device))
        k = int(torch.randint(1, 4, (1,), generator=gen))
        xy = torch.rand(k, 2, generator=gen) * size * 0.6
        wh = torch.rand(k, 2, generator=gen) * size * 0.3 + 6
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1)
        t = {"boxes": boxes.to(device), "labels": torch.randint(1, 7, (k,), generator=gen).to(device)}
        if masks:
            m = torch.zeros(k, size, size, dtype=torch.uint8)
            for j, b in enumerate(boxes.long().tolist()):
                m[j, b[1]:b[3], b[0]:b[2]] = 1
            t["masks"] = m.to(device)
        targets.append(t)
    return images, targets


def time_detector(model: nn.Module, args: argparse.Namespace, device: torch.device, masks: bool = False) -> float:
    model.to(device).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    data = [batch(args.batch, args.size, gen, device, masks) for _ in range(args.iters)]

    def step(images: list, targets: list) -> None:
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _best(lambda: [step(*d) for d in data], args, device) / (args.iters * args.batch)


def time_segmenter(model: nn.Module, args: argparse.Namespace, device: torch.device) -> float:
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 19, (args.batch, args.size, args.size), device=device)

    def step() -> None:
        loss = F.cross_entropy(model(x), y, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _best(lambda: [step() for _ in range(args.iters)], args, device) / (args.iters * args.batch)


def _best(fn: Callable[[], object], args: argparse.Namespace, device: torch.device) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(args.repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def encoder(name: str, size: int) -> nn.Module:
    params = {"width": 32} if name == "small-resnet" else {}
    return components.get("arch", name)(params, in_channels=3, image_size=(size, size))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backbone", default="resnet18", help="resnet18 | resnet50 for the FPN rows")
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    s = args.size
    anchors5 = (8, 16, 32, 64, 128)
    rows: list[tuple[str, float]] = []
    cfg = DetectorConfig(head="fpn", num_classes=6, anchor_sizes=anchors5, min_size=(s,), max_size=s, **SMALL)
    rows.append((f"ours fpn {args.backbone}", time_detector(build_detector(trunk_of(encoder(args.backbone, s)), cfg),
                                                            args, device)))
    peer = FasterRCNN(resnet_fpn_backbone(backbone_name=args.backbone, weights=None, trainable_layers=5,
                                          norm_layer=nn.BatchNorm2d), num_classes=7, min_size=s, max_size=s,
                      rpn_anchor_generator=AnchorGenerator(tuple((a,) for a in anchors5), ((0.5, 1.0, 2.0),) * 5),
                      image_mean=[0.0] * 3, image_std=[1.0] * 3, **SMALL)
    rows.append((f"torchvision fpn {args.backbone} (peer)", time_detector(peer, args, device)))
    c4 = DetectorConfig(head="c4", num_classes=6, anchor_sizes=(8, 16, 32, 64), c4_pool_size=8, min_size=(s,),
                        max_size=s, **SMALL)
    rows.append(("ours c4 small-resnet (scenes-voc-det)", time_detector(build_detector(
        trunk_of(encoder("small-resnet", s)), c4), args, device)))
    fm = DetectorConfig(head="fpn", num_classes=6, masks=True, fpn_levels=3, fpn_channels=64, box_head_dim=256,
                        mask_head_dim=64, anchor_sizes=(8, 16, 32, 64), min_size=(s,), max_size=s, **SMALL)
    rows.append(("ours fpn+mask small-resnet (scenes-coco-det)", time_detector(build_detector(
        trunk_of(encoder("small-resnet", s)), fm), args, device, masks=True)))
    seg = build_segmenter(trunk_of(encoder("small-resnet", s)), "fcn", 19, 128)
    rows.append(("ours fcn small-resnet (scenes-seg)", time_segmenter(seg, args, device)))
    peer_s = rows[1][1]
    lines = ["| configuration | images/s | s/image vs peer |", "| --- | --- | --- |"]
    for name, sec in rows:
        lines.append(f"| {name} | {1 / sec:.1f} | {sec / peer_s:.2f}x |")
    header = (f"## dense training ({time.strftime('%Y-%m-%d')}, {platform.machine()}, torch {torch.__version__}, "
              f"{args.device}, {args.threads} thread(s), {s}px, batch {args.batch}, best of {args.repeat} x "
              f"{args.iters} iterations)")
    text = "\n".join([header, "", *lines, ""])
    print(text)
    if args.append:
        path = Path(__file__).with_name("RESULTS.md")
        path.write_text(path.read_text() + "\n" + text)


if __name__ == "__main__":
    main()
