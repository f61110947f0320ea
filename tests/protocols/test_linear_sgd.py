"""linear_sgd: the papers' SGD linear evaluation — recipes pinned to their sources, the schedule
against hand-worked values, the head's training against an independent numpy rewrite of SGD with
momentum, a frozen backbone (eval mode, BatchNorm statistics untouched), ImageFolder's original
train view, and a run through the engine on the hard digits twin."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cl_bench import components
from cl_bench.data.image.types import ArrayImageSplit, ImageClassificationData
from cl_bench.protocols.base import RunContext
from cl_bench.protocols import linear_sgd
from cl_bench.protocols.linear_sgd import LinearSgdParams, learning_rate, train_head
from cl_bench.registry import default_registry
from cl_bench.params import validate_params


def test_recipes_equal_their_sources() -> None:
    moco = LinearSgdParams(recipe="moco")
    # facebookresearch/moco main_lincls.py argparse defaults and body:
    assert moco.epochs == 100  # --epochs default 100
    assert moco.batch_size == 256  # -b default 256
    assert moco.lr == 30.0 and moco.lr_scaling == "none"  # --lr default 30.0, used as is
    assert moco.schedule == "step" and moco.milestones == [60, 80] and moco.gamma == 0.1  # --schedule 60 80, lr *= 0.1
    assert moco.momentum == 0.9 and not moco.nesterov  # --momentum 0.9, torch.optim.SGD(...) without nesterov
    assert moco.weight_decay == 0.0  # --wd default 0.
    assert moco.head_init == "normal"  # fc.weight.normal_(0, 0.01), fc.bias.zero_()
    assert moco.crop_scale == (0.08, 1.0) and moco.hflip  # RandomResizedCrop(224) defaults + RandomHorizontalFlip()
    simclr = LinearSgdParams(recipe="simclr")
    # google-research/simclr README, linear eval: --optimizer=momentum (Nesterov in its optimizer),
    # --learning_rate=0.1 --learning_rate_scaling=linear --weight_decay=0 --train_epochs=90
    # --train_batch_size=4096 --warmup_epochs=0 --zero_init_logits_layer=True; cosine decay
    assert (simclr.epochs, simclr.batch_size, simclr.lr, simclr.lr_scaling) == (90, 4096, 0.1, "linear")
    assert simclr.nesterov and simclr.momentum == 0.9 and simclr.weight_decay == 0.0
    assert simclr.schedule == "cosine" and simclr.head_init == "zero"
    # an explicit value wins over the recipe
    assert LinearSgdParams(recipe="moco", lr=0.5).lr == 0.5


def test_learning_rate_hand_worked() -> None:
    moco = LinearSgdParams(recipe="moco")
    assert learning_rate(moco, 0, 0, 10) == 30.0
    assert learning_rate(moco, 59, 9, 10) == 30.0
    assert learning_rate(moco, 60, 0, 10) == pytest.approx(3.0)
    assert learning_rate(moco, 79, 3, 10) == pytest.approx(3.0)
    assert learning_rate(moco, 80, 0, 10) == pytest.approx(0.3)
    simclr = LinearSgdParams(recipe="simclr")  # base 0.1 * 4096 / 256 = 1.6
    assert learning_rate(simclr, 0, 0, 4) == pytest.approx(1.6)
    assert learning_rate(simclr, 45, 0, 4) == pytest.approx(0.8)  # t = T/2: half
    assert learning_rate(simclr, 30, 0, 4) == pytest.approx(1.6 * 0.5 * (1 + math.cos(math.pi / 3)))


class FixedFeatures(nn.Module):
    """A 'backbone' with a BatchNorm (its statistics must not move) over flattened pixels."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.1, 0.1)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.flatten(1))


def numpy_sgd(feats: np.ndarray, y: np.ndarray, c: int, params: LinearSgdParams, w0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch SGD with heavy-ball momentum (v = m v + g; p -= lr v) on mean softmax CE, float64."""
    w, b = w0.astype(np.float64).copy(), np.zeros(c)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    onehot = np.eye(c)[y]
    for epoch in range(params.epochs):
        z = feats @ w.T + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        r = (p - onehot) / len(y)
        gw, gb = r.T @ feats, r.sum(0)
        lr = params.lr * params.gamma ** sum(epoch >= m for m in params.milestones)
        vw, vb = params.momentum * vw + gw, params.momentum * vb + gb
        w, b = w - lr * vw, b - lr * vb
    return w, b


def test_head_training_equals_numpy_sgd_and_backbone_stays_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    n, c = 40, 3
    images = rng.random((n, 1, 4, 4)).astype(np.float32)
    labels = rng.integers(0, c, n)
    split = ArrayImageSplit(images, labels)
    model = FixedFeatures(16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # no augmentation (the whole image, no flip) and one full batch: the order of items is moot
    params = LinearSgdParams(
        recipe="moco", epochs=12, batch_size=n, lr=0.7, milestones=[5, 9],
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=False,
    )
    inits: list[torch.Tensor] = []
    original = linear_sgd.make_head

    def recording_head(dim: int, classes: int, init: str) -> nn.Linear:
        head = original(dim, classes, init)
        inits.append(head.weight.detach().clone())
        assert torch.equal(head.bias, torch.zeros(classes)) and 0.005 < float(head.weight.detach().std()) < 0.02
        return head

    monkeypatch.setattr(linear_sgd, "make_head", recording_head)
    torch.manual_seed(0)
    head, extras = train_head(model, split, c, params, (4, 4), seed=0, device=torch.device("cpu"))
    w0 = inits[0].numpy()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # eval mode: running statistics untouched
    assert not model.training
    with torch.no_grad():
        feats = model(torch.from_numpy(images)).double().numpy()
    w, b = numpy_sgd(feats, labels, c, params, w0)
    assert np.abs(head.weight.detach().double().numpy() - w).max() < 1e-5
    assert np.abs(head.bias.detach().double().numpy() - b).max() < 1e-5
    assert extras["steps"] == 12 and len(extras["train_loss_per_epoch"]) == 12
    assert extras["final_lr"] == pytest.approx(0.7 * 0.01)


def test_augmentation_crops_and_flips_each_read() -> None:
    from cl_bench.protocols.linear_sgd import train_transform

    img = torch.arange(64, dtype=torch.float32).view(1, 8, 8) / 64
    torch.manual_seed(1)
    views = [train_transform(LinearSgdParams(), (8, 8))(img) for _ in range(20)]
    assert all(v.shape == (1, 8, 8) for v in views)
    assert len({tuple(v.flatten().tolist()) for v in views}) > 10  # a fresh crop each time
    flipped = train_transform(LinearSgdParams(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0)), (8, 8))
    torch.manual_seed(0)
    outs = [flipped(img) for _ in range(30)]
    assert any(torch.allclose(o, img, atol=1e-6) for o in outs)
    assert any(torch.allclose(o, img.flip(-1), atol=1e-6) for o in outs)


def test_imagefolder_original_train_view(tmp_path: Path) -> None:
    for split, name, size in (("train", "a", (40, 30)), ("train", "b", (20, 50)), ("val", "c", (36, 36))):
        for cls in ("x", "y"):
            (tmp_path / "toy" / split / cls).mkdir(parents=True, exist_ok=True)
            arr = np.random.default_rng(len(name)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "toy" / split / cls / f"{name}.png")
    load = components.get("dataset", "imagefolder")
    data = load({"root": "toy", "resize": 32, "crop": 24, "train_view": "original"}, tmp_path)
    assert data.train[0][0].shape == (3, 30, 40) and data.train[1][0].shape == (3, 50, 20)
    assert data.test[0][0].shape == (3, 24, 24)  # the test view keeps resize + centre crop
    default = load({"root": "toy", "resize": 32, "crop": 24}, tmp_path)
    assert default.train[0][0].shape == (3, 24, 24)
    assert default.train.fingerprint != data.train.fingerprint


def test_run_on_the_digits_twin_through_the_protocol() -> None:
    task = default_registry().task("digits-hard-linear-sgd")
    assert task.protocol.params == {"recipe": "moco", "epochs": 30, "milestones": [18, 24]}
    data = components.get("dataset", "digits-hard")(task.dataset.params, None)
    protocol = components.get("protocol", "linear_sgd")
    params = validate_params(protocol.params, {**task.protocol.params, "epochs": 2}, "test")
    model = components.get("arch", "raw-pixels")({}, in_channels=data.in_channels, image_size=data.image_size)

    def features(m: nn.Module, split: object) -> np.ndarray:
        with torch.no_grad():
            return m(split.tensor()).numpy()

    torch.manual_seed(0)
    out = protocol.run(model, data, params, RunContext(torch.device("cpu"), 0, features))
    assert set(out.metrics) == {"top1", "top5"} and 0.0 <= out.metrics["top1"] <= 100.0
    assert len(out.predictions.item) == len(data.test)
    assert out.extras["steps"] == 2 * math.ceil(len(data.train) / 256)
    assert isinstance(data, ImageClassificationData)
