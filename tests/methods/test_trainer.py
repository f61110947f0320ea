"""The shared trainer: learning, determinism, schedule, batching and user errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cl_bench.data.image.types import ArrayImageSplit, ImageSplit
from cl_bench.errors import ClBenchError
from cl_bench.methods.trainer import TrainCard, lr_at_step, train_encoder
from cl_bench.models.interfaces.image_encoder import ImageEncoder
from cl_bench.specs import TrainRecipe

CPU = torch.device("cpu")


class TinyEncoder(ImageEncoder):
    def __init__(self, embed_dim: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(images)))
        return self.fc(nn.functional.adaptive_avg_pool2d(h, 4).flatten(1))


class NaNEncoder(TinyEncoder):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward(images) * float("nan")


class ListSplit(ImageSplit):
    """A split that is not an ArrayImageSplit (exercises the DataLoader path)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels, self.fingerprint = images, labels, "list"

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.images[i]).float() / 255, int(self.labels[i])


def random_split(n: int = 64, size: int = 8, seed: int = 0) -> ArrayImageSplit:
    rng = np.random.default_rng(seed)
    return ArrayImageSplit(rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8), rng.integers(0, 3, n))


def bars_split(n: int = 96, seed: int = 0) -> ArrayImageSplit:
    """Class 0: a horizontal bar, class 1: a vertical bar, at random positions, plus noise."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 0.2, (n, 1, 12, 12)).astype(np.float32)
    labels = np.arange(n) % 2
    for i in range(n):
        p = rng.integers(2, 10)
        if labels[i] == 0:
            images[i, 0, p - 1 : p + 1, 1:11] = 1.0
        else:
            images[i, 0, 1:11, p - 1 : p + 1] = 1.0
    return ArrayImageSplit(images, labels)


def recipe(objective: str = "simclr", **over: object) -> TrainRecipe:
    base: dict = {"objective": objective, "epochs": 3, "batch_size": 16, "lr": 0.01, "warmup_epochs": 0}
    return TrainRecipe(**{**base, **over})


@pytest.mark.parametrize("objective", ["simclr", "dcl", "dclw"])
def test_contrastive_loss_decreases(objective: str) -> None:
    torch.manual_seed(0)
    enc = TinyEncoder()
    r = recipe(objective, epochs=10, augment={"crop_scale": [0.8, 1.0], "erase_prob": 0.0})
    card = train_encoder(enc, r, random_split(), 3, seed=0, device=CPU)
    curve = card.loss_curve
    assert len(curve) == 10
    assert sum(curve[-3:]) / 3 < sum(curve[:2]) / 2 - 0.15
    assert not enc.training


def test_same_seed_same_weights_other_seed_differs() -> None:
    def run(seed: int) -> tuple[dict[str, torch.Tensor], TrainCard]:
        torch.manual_seed(123)  # same initial weights in every run
        enc = TinyEncoder()
        card = train_encoder(enc, recipe(epochs=2), random_split(), 3, seed=seed, device=CPU)
        return enc.state_dict(), card

    (a, ca), (b, cb), (c, _) = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ca.loss_curve == cb.loss_curve
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_supervised_learns_a_separable_toy_set() -> None:
    torch.manual_seed(0)
    enc = TinyEncoder()
    split = bars_split()
    r = recipe("supervised", epochs=25, batch_size=32, lr=0.01, augment={"rotation_deg": 0, "erase_prob": 0})
    card = train_encoder(enc, r, split, 2, seed=0, device=CPU)
    assert card.loss_curve[-1] < 0.2 < card.loss_curve[0]
    # train accuracy of a nearest-class-mean classifier on the trained (frozen) embedding
    with torch.no_grad():
        emb = enc(split.tensor())
    labels = torch.from_numpy(split.labels)
    means = torch.stack([emb[labels == k].mean(0) for k in (0, 1)])
    pred = torch.cdist(emb, means).argmin(1)
    assert float((pred == labels).float().mean()) >= 0.95


def test_card_counts_steps_and_drop_last() -> None:
    card = train_encoder(TinyEncoder(), recipe(epochs=2, batch_size=16), random_split(n=40), 3, 0, CPU)
    assert card.steps == 2 * (40 // 16) and card.n_train == 40 and card.epochs == 2
    assert card.objective == "simclr" and {"wall_s", "images_per_s"}.issubset(card.to_json())
    assert json.loads(json.dumps(card.to_json()))["loss_curve"] == card.loss_curve
    small = train_encoder(TinyEncoder(), recipe(epochs=2, batch_size=64), random_split(n=10), 3, 0, CPU)
    assert small.steps == 2  # a split smaller than the batch is one batch per epoch


def test_dataloader_path_matches_array_path_in_steps() -> None:
    arr = random_split(n=40)
    lst = ListSplit(arr.images, arr.labels)
    card = train_encoder(TinyEncoder(), recipe(epochs=2), lst, 3, 0, CPU, progress=True)
    assert card.steps == 2 * (40 // 16) and all(math.isfinite(v) for v in card.loss_curve)


def test_lr_schedule() -> None:
    r = recipe(lr=0.1, schedule="cosine")
    assert [lr_at_step(s, 10, 2, r) for s in (0, 1)] == pytest.approx([0.05, 0.1])
    assert lr_at_step(2, 10, 2, r) == pytest.approx(0.1)
    assert lr_at_step(6, 10, 2, r) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert lr_at_step(9, 10, 2, r) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    c = recipe(lr=0.1, schedule="constant")
    assert [lr_at_step(s, 10, 0, c) for s in (0, 5, 9)] == pytest.approx([0.1] * 3)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_other_optimizers_train(optimizer: str) -> None:
    card = train_encoder(TinyEncoder(), recipe(optimizer=optimizer, epochs=1), random_split(), 3, 0, CPU)
    assert card.steps == 4 and math.isfinite(card.loss_curve[0])


def test_nan_loss_suggests_lower_lr() -> None:
    with pytest.raises(ClBenchError, match="lower train.lr"):
        train_encoder(NaNEncoder(), recipe(epochs=1), random_split(), 3, 0, CPU)


@pytest.mark.parametrize("over, message", [
    ({"params": {"temprature": 0.5}}, r"simclr.*temprature"),
    ({"augment": {"rotaton": 3}}, "rotaton"),
    ({"objective": "simclrr"}, "simclrr"),
])
def test_user_errors_are_one_line(over: dict, message: str) -> None:
    with pytest.raises(ClBenchError, match=message) as e:
        train_encoder(TinyEncoder(), recipe(**over), random_split(), 3, 0, CPU)
    assert "\n" not in str(e.value)


def test_supervised_needs_labels() -> None:
    with pytest.raises(ClBenchError, match="supervised"):
        train_encoder(TinyEncoder(), recipe("supervised"), random_split(), 0, 0, CPU)


def test_cpu_steps_are_logged_as_floats_and_the_epoch_mean_is_unchanged() -> None:
    """On the CPU fit keeps each step's loss and terms as Python floats (a kept 0-d tensor per step
    fragmented the heap); the epoch mean summed from them is the same float32 sum, bit for bit, as
    summing the tensors was."""
    from cl_bench.methods.trainer import EpochLog, epoch_mean, fit

    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    log = fit(opt, total=5, batches=lambda epoch: range(5),
              loss=lambda batch: ((w ** 2).sum() * (batch + 1), {"l1": w.abs().sum()}))
    assert log.steps == 5
    assert all(type(v) is float for e in log.epochs for v in e.losses)
    assert all(type(v) is float for e in log.epochs for p in e.parts for v in p.values())
    g = torch.Generator().manual_seed(0)
    values = [(torch.rand((), generator=g) * 10).float() for _ in range(3000)]
    by_tensor = torch.zeros(())
    for v in values:
        by_tensor += v
    recipe = TrainRecipe(objective="simclr", epochs=1, batch_size=2, lr=0.1)
    assert epoch_mean(EpochLog(0, [float(v) for v in values]), 3000, recipe) == float(by_tensor) / 3000
