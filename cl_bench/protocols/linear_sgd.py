"""Linear evaluation as the papers run it: SGD on a linear head over a frozen, augmented backbone.

The fast probe (:mod:`cl_bench.protocols.linear_probe`) fits L-BFGS on cached centre-crop
features; the numbers SSL papers print in their "linear evaluation" column come from this
protocol instead. Two recipes are pinned by ``recipe`` (every value can still be overridden):

``moco`` — facebookresearch/moco ``main_lincls.py``: the backbone in eval mode (BatchNorm
statistics frozen: "it is not legitimate to change any part of the pre-trained model"), the head
``fc`` initialised N(0, 0.01) with a zero bias, SGD momentum 0.9, lr 30, weight decay 0, batch
256, 100 epochs, lr × 0.1 at epochs 60 and 80; train augmentation RandomResizedCrop(224)
(scale 0.08-1, ratio 3/4-4/3) + horizontal flip; test on the dataset's own evaluation view
(ImageNet: resize 256, centre crop 224). Used by MoCo, PixPro, CACR (built on MoCo's code).

``simclr`` — google-research/simclr ``run.py --train_mode=finetune --fine_tune_after_block=4``
(its README's linear-evaluation command; SimCLR paper App. B.6): Nesterov momentum 0.9, lr
0.1 × batch / 256 (``learning_rate_scaling=linear``), batch 4096, 90 epochs, cosine decay per
step without warm-up, zero-initialised head (``zero_init_logits_layer``), weight decay 0, the
same crop + flip augmentation. (The paper notes LARS with the pre-training hyper-parameters
"yields similar results"; the README's momentum/Nesterov command is the one pinned here.)

Per epoch the training images are shuffled (a generator seeded by the run seed), each image is
augmented with torchvision's ``RandomResizedCrop`` / ``RandomHorizontalFlip`` (the field's
implementation; randomness from torch's global generator, which the engine seeds), passed
through the frozen model without gradients, and the head takes one SGD step per batch. The
reported top-1/top-5 are those of the final head on the test split (no test-set model
selection, unlike ``main_lincls.py``'s running ``best_acc1``). Test features go through the
feature cache, as the fast probe's do.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from cl_bench.budget import Budget, Budgeted, first, probe_budget
from cl_bench.components import register
from cl_bench.data.subsets import take
from cl_bench.data.image.types import ImageClassificationData, ImageSplit
from cl_bench.errors import ClBenchError
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext
from cl_bench.protocols.linear_probe import classification_result

RECIPES: dict[str, dict[str, Any]] = {
    "moco": {
        "epochs": 100, "batch_size": 256, "lr": 30.0, "lr_scaling": "none", "momentum": 0.9,
        "nesterov": False, "weight_decay": 0.0, "schedule": "step", "milestones": [60, 80],
        "gamma": 0.1, "head_init": "normal",
    },
    "simclr": {
        "epochs": 90, "batch_size": 4096, "lr": 0.1, "lr_scaling": "linear", "momentum": 0.9,
        "nesterov": True, "weight_decay": 0.0, "schedule": "cosine", "milestones": [],
        "gamma": 0.1, "head_init": "zero",
    },
}


class LinearSgdParams(ProtocolParams):
    """``recipe`` fills every hyper-parameter left unset (None) from :data:`RECIPES`."""

    recipe: Literal["moco", "simclr"] = "moco"
    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    lr_scaling: Literal["none", "linear"] | None = None  # linear: lr × batch_size / 256
    momentum: float | None = Field(None, ge=0.0, lt=1.0)
    nesterov: bool | None = None
    weight_decay: float | None = Field(None, ge=0.0)
    schedule: Literal["step", "cosine"] | None = None
    milestones: list[int] | None = None  # epochs at which a step schedule multiplies lr by gamma
    gamma: float | None = Field(None, gt=0.0, le=1.0)
    head_init: Literal["normal", "zero"] | None = None  # normal: N(0, 0.01) (MoCo); zero (SimCLR)
    crop_size: int | None = Field(None, ge=1)  # None: the dataset's image size
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _fill_from_recipe(self) -> LinearSgdParams:
        for key, value in RECIPES[self.recipe].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must be (low, high) with 0 < low <= high, got {self.crop_ratio}")
        return self


def learning_rate(params: LinearSgdParams, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate of one SGD step (``epoch`` and ``step`` within it count from 0).

    step: ``base × gamma^(number of milestones <= epoch)`` (MoCo's ``adjust_learning_rate``);
    cosine: ``base × ½(1 + cos(π t / T))`` with t the global step and T all steps (SimCLR).
    ``base = lr`` (× batch / 256 under linear scaling).
    """
    base = float(params.lr) * (params.batch_size / 256.0 if params.lr_scaling == "linear" else 1.0)
    if params.schedule == "step":
        return base * float(params.gamma) ** sum(epoch >= m for m in params.milestones or [])
    total = int(params.epochs) * steps_per_epoch
    t = epoch * steps_per_epoch + step
    return base * 0.5 * (1.0 + math.cos(math.pi * t / total))


class _Augmented(Dataset):
    """The train split, each item cropped and flipped afresh on every read."""

    def __init__(self, split: ImageSplit, transform: Any) -> None:
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.split[index]
        return self.transform(image), label


def train_transform(params: LinearSgdParams, size: tuple[int, int]) -> v2.Compose:
    """RandomResizedCrop(size, scale, ratio, bilinear, antialiased) then a horizontal flip (p = ½)."""
    steps: list[Any] = [v2.RandomResizedCrop(size, scale=params.crop_scale, ratio=params.crop_ratio, antialias=True)]
    if params.hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    return v2.Compose(steps)


def make_head(dim: int, num_classes: int, init: str) -> nn.Linear:
    head = nn.Linear(dim, num_classes)
    with torch.no_grad():
        if init == "normal":
            head.weight.normal_(0.0, 0.01)
        else:
            head.weight.zero_()
        head.bias.zero_()
    return head


def train_head(
    model: nn.Module, split: ImageSplit, num_classes: int, params: LinearSgdParams,
    size: tuple[int, int], seed: int, device: torch.device,
) -> tuple[nn.Linear, dict[str, Any]]:
    """SGD on a linear head over ``model``'s frozen features of augmented ``split`` images."""
    model.eval()  # never back in train mode: BatchNorm statistics stay the pretrained ones
    shuffle = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        _Augmented(split, train_transform(params, size)), batch_size=int(params.batch_size),
        shuffle=True, generator=shuffle, num_workers=params.num_workers, drop_last=False,
    )
    steps_per_epoch = len(loader)
    head: nn.Linear | None = None
    opt: torch.optim.SGD | None = None
    losses: list[float] = []
    for epoch in range(int(params.epochs)):
        total, count = 0.0, 0
        for step, (x, y) in enumerate(loader):
            with torch.no_grad():
                feats = model(x.to(device)).float()
            if head is None:
                head = make_head(feats.shape[1], num_classes, str(params.head_init)).to(device)
                opt = torch.optim.SGD(
                    head.parameters(), lr=1.0, momentum=float(params.momentum),
                    nesterov=bool(params.nesterov), weight_decay=float(params.weight_decay),
                )
            assert opt is not None
            for group in opt.param_groups:
                group["lr"] = learning_rate(params, epoch, step, steps_per_epoch)
            loss = nn.functional.cross_entropy(head(feats), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(y), count + len(y)
        losses.append(total / max(count, 1))
        if not math.isfinite(losses[-1]):
            raise ClBenchError(
                f"linear_sgd: the training loss became {losses[-1]} in epoch {epoch}; "
                "lower the protocol's lr (or pick the other recipe)"
            )
    if head is None:
        raise ClBenchError("linear_sgd: the training split is empty: nothing to fit")
    extras = {
        "recipe": params.recipe,
        "hyper_parameters": params.model_dump(exclude={"num_workers"}),
        "steps": steps_per_epoch * int(params.epochs),
        "train_loss_per_epoch": [round(v, 6) for v in losses],
        "final_lr": learning_rate(params, int(params.epochs) - 1, steps_per_epoch - 1, steps_per_epoch),
    }
    return head, extras


def _run(model: Any, data: ImageClassificationData, params: LinearSgdParams, ctx: RunContext) -> ProtocolResult:
    size = (params.crop_size, params.crop_size) if params.crop_size else tuple(data.image_size)
    head, extras = train_head(model, data.train, data.num_classes, params, size, ctx.seed, ctx.device)
    test = torch.from_numpy(np.ascontiguousarray(ctx.features(model, data.test))).to(ctx.device)
    with torch.no_grad():
        scores = head(test.float())
    return classification_result(scores, data.test.labels, extras)


def linear_sgd_budget(params: LinearSgdParams, data: ImageClassificationData, budget: Budget) -> Budgeted:
    """The first N test images; under ``--smoke`` one epoch over the first
    :data:`~cl_bench.budget.SMOKE_TRAIN_PER_CLASS` training images of each class, cut to at most
    :data:`~cl_bench.budget.SMOKE_TRAIN_STEPS` batches of the recipe's batch size (its lr, momentum,
    schedule and augmentation unchanged)."""
    reduced = probe_budget(params, data, budget)
    if budget.train_steps is None:
        return reduced
    batch, train = int(params.batch_size), reduced.data.train
    if len(train) > budget.train_steps * batch:
        train = take(train, first(len(train), budget.train_steps * batch))
        reduced.data = dataclasses.replace(reduced.data, train=train)
        reduced.applied["train"] += f", then the first {len(train)}"
    steps = math.ceil(len(train) / batch)
    reduced.params = params.model_copy(update={"epochs": 1})
    reduced.applied["epochs"] = f"1 of {params.epochs} epochs: {steps} SGD step(s) of up to {batch} images"
    reduced.train_steps = steps
    return reduced


PROTOCOL = register("protocol", "linear_sgd")(
    Protocol(name="linear_sgd", requires="image_encoder", params=LinearSgdParams, run=_run, budget=linear_sgd_budget)
)
