"""Which image tower can learn the scenes' shapes at all? (issue #18 part 1, a diagnosis)

A supervised 6-way shape classifier (label: the shape of the largest visible object, as
scenes-zeroshot) trained on scenes of the procedural world and scored on held-out scenes of the
same world, for the two scene-clip image towers: ``small-resnet`` (strided stem and shortcuts; the
image–text methods' tower) and ``PoolConvNet`` (max-pool downsampling). If a tower cannot learn
shapes with labels, CLIP cannot learn them from captions. Train accuracy is measured on 500
training scenes in eval mode. Appends a section to RESULTS.md.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/scene_towers.py [--epochs 16] [--max-objects 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.record import append_section, machine_line
from cl_bench.data.scenes.captions import largest_object
from cl_bench.data.scenes.world import SHAPES, generate_scene, render
from cl_bench.models.image.pool_convnet import PoolConvNet
from cl_bench.models.image.small_resnet import SmallResNet

NORM = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


def scenes(n: int, first: int, max_objects: int) -> tuple[torch.Tensor, torch.Tensor]:
    crowd = 0.0 if max_objects == 1 else 0.15
    x = np.zeros((n, 64, 64, 3), np.uint8)
    y = np.zeros(n, np.int64)
    for i in range(n):
        s = generate_scene(0, first + i, 64, min_objects=1, max_objects=max_objects, crowd_prob=crowd)
        x[i] = render(s)[0]
        y[i] = SHAPES.index(s.objects[largest_object(s)].shape)
    return torch.as_tensor(x).permute(0, 3, 1, 2).float() / 255, torch.as_tensor(y)


class Classifier(nn.Module):
    def __init__(self, tower: nn.Module, pool: str, classes: int = len(SHAPES)) -> None:
        super().__init__()
        self.tower, self.pool = tower, pool
        self.head = nn.Linear(tower.embed_dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.tower.feature_maps(x)[f"stage{len(self.tower.stages)}"]
        return self.head(fmap.amax((2, 3)) if self.pool == "max" else fmap.mean((2, 3)))


def run(name: str, net: nn.Module, data: tuple, epochs: int) -> str:
    xtr, ytr, xte, yte = data
    torch.manual_seed(0)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=0.05)
    steps = epochs * (len(xtr) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    t0 = time.process_time()
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(xtr))
        for b in range(len(xtr) // 64):
            idx = order[b * 64:(b + 1) * 64]
            loss = F.cross_entropy(net(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        train = (net(xtr[:500]).argmax(1) == ytr[:500]).float().mean().item() * 100
        test = (net(xte).argmax(1) == yte).float().mean().item() * 100
    cpu = time.process_time() - t0
    print(f"{name}: train {train:.1f} held-out {test:.1f} ({cpu:.0f} CPU s)", flush=True)
    return f"| {name} | {train:.1f} | {test:.1f} | {cpu:.0f} |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--max-objects", type=int, default=1)
    ap.add_argument("--n-train", type=int, default=2000)
    a = ap.parse_args()
    torch.set_num_threads(1)
    xtr, ytr = scenes(a.n_train, 0, a.max_objects)
    xte, yte = scenes(500, 100_000, a.max_objects)
    data = (xtr, ytr, xte, yte)
    majority = np.bincount(yte.numpy(), minlength=len(SHAPES)).max() / len(yte) * 100
    rows = [
        run("small-resnet width 16, blocks [1,1,1], mean pool (scene-clip's default)",
            Classifier(SmallResNet(3, 16, (1, 1, 1), stem_stride=2, **NORM), "mean"), data, a.epochs),
        run("PoolConvNet width 24, blocks [1,2], max pool",
            Classifier(PoolConvNet(3, 24, (1, 2), **NORM), "max"), data, a.epochs),
    ]
    append_section(
        f"## scene_towers (issue #18 part 1: can the tower learn shapes with labels?; {time.strftime('%Y-%m-%d')})",
        f"{machine_line()} {a.n_train} training scenes with 1..{a.max_objects} object(s), 500 held-out scenes, "
        f"{a.epochs} epochs of batch 64, AdamW 2e-3 one-cycle, 1 thread; majority class {majority:.1f} %.\n\n"
        "| tower | train top-1 % | held-out top-1 % | CPU s |\n|---|---|---|---|\n" + "\n".join(rows),
    )


if __name__ == "__main__":
    main()
