"""``simclr-rotation`` (ScatSimCLR's rotation pretext regularisation) against the authors' definition.

vkinakh/scatsimclr: ``RotationDataset`` makes, per image, the views (none, ``cv2.ROTATE_90_CLOCKWISE``,
``cv2.ROTATE_180``, ``cv2.ROTATE_90_COUNTERCLOCKWISE``) with labels 0-3; ``PretextTaskTrainer`` adds
``lambda * CrossEntropy(classifier(h), label)`` (lambda = 0.3 in ``config_pretext.yaml``) to the
NT-Xent loss. The expected numbers below are plain numpy: a hand-rotated marker, NT-Xent written
from the SimCLR paper's definition, and a log-softmax cross-entropy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cl_bench import components
from cl_bench.data.image.types import ArrayImageSplit
from cl_bench.errors import ClBenchError
from cl_bench.methods.image.rotation_pretext import rotated_batch
from cl_bench.methods.trainer import train_encoder
from cl_bench.specs import TrainRecipe


def test_rotations_are_clockwise_as_the_authors_labels() -> None:
    img = torch.zeros(1, 1, 3, 3)
    img[0, 0, 0, 0] = 1.0  # a marker in the top-left corner
    views = [img.clone() for _ in range(4)]
    rotated, labels = rotated_batch(views)
    assert labels.tolist() == [0, 1, 2, 3]
    # clockwise: top-left -> top-right (90°) -> bottom-right (180°) -> bottom-left (270° = 90° counter-clockwise)
    where = [tuple(int(i) for i in torch.nonzero(rotated[k, 0])[0]) for k in range(4)]
    assert where == [(0, 0), (0, 2), (2, 2), (2, 0)]


class _Flat(nn.Module):
    """A deterministic encoder: flatten -> linear -> tanh."""

    def __init__(self, pixels: int, dim: int) -> None:
        super().__init__()
        self.embed_dim = dim
        self.fc = nn.Linear(pixels, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(x.flatten(1)))


def _nt_xent(z: np.ndarray, n: int, tau: float) -> float:
    """SimCLR's loss: z [2n, d], pairs (k, k + n); mean over the 2n anchors."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    total = 0.0
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        denom = sum(math.exp(float(z[a] @ z[b]) / tau) for b in range(2 * n) if b != a)
        total += -math.log(math.exp(float(z[a] @ z[pos]) / tau) / denom)
    return total / (2 * n)


def _cross_entropy(logits: np.ndarray, labels: list[int]) -> float:
    out = 0.0
    for row, y in zip(logits, labels):
        m = row.max()
        out += -(row[y] - m - math.log(np.exp(row - m).sum()))
    return out / len(labels)


def test_loss_is_nt_xent_plus_lambda_rotation_cross_entropy() -> None:
    torch.manual_seed(3)
    n, size, tau, lam = 5, 4, 0.2, 0.3
    enc = _Flat(size * size, 6)
    obj = components.get("objective", "simclr-rotation")(embed_dim=6, num_classes=0, temperature=tau,
                                                         proj_hidden=8, proj_dim=5, pretext_weight=lam,
                                                         pretext_hidden=[7, 3])
    obj.eval()  # dropout off, batch norm on its (initial) running statistics
    gen = torch.Generator().manual_seed(8)
    views = [torch.rand(n, 1, size, size, generator=gen) for _ in range(6)]
    got = float(obj(enc, views, torch.zeros(n)).detach())
    with torch.no_grad():
        z = obj.head(enc(torch.cat(views[:2]))).double().numpy()
        rotated, labels = [], []
        for k in range(4):  # clockwise by k quarter turns: numpy's rot90 turns counter-clockwise for k > 0
            rotated.append(np.rot90(views[2 + k].numpy(), -k, axes=(2, 3)).copy())
            labels += [k] * n
        logits = obj.pretext_head(enc(torch.from_numpy(np.concatenate(rotated)))).double().numpy()
    expect = _nt_xent(z, n, tau) + lam * _cross_entropy(logits, labels)
    assert got == pytest.approx(expect, abs=1e-5)


def test_trainer_feeds_six_views_and_the_head_learns() -> None:
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)).numpy()
    split = ArrayImageSplit(images, np.zeros(16, dtype=np.int64))
    params = {"proj_hidden": 8, "proj_dim": 4, "pretext_hidden": [8, 4]}
    recipe = TrainRecipe(objective="simclr-rotation", params=params,
                         epochs=2, batch_size=8, lr=0.01, augment={"erase_prob": 0.0})
    calls: list[int] = []
    enc = _Flat(64, 6)
    enc.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    card = train_encoder(enc, recipe, split, 0, seed=0, device=torch.device("cpu"))
    # per step: one pass over the two contrastive views, one over the four rotated ones
    assert [c for c in calls if c != 1] == [16, 32] * card.steps and card.steps == 4
    assert all(math.isfinite(x) for x in card.loss_curve)


def test_non_square_images_are_a_clear_error() -> None:
    obj = components.get("objective", "simclr-rotation")(embed_dim=6, num_classes=0, proj_hidden=8, proj_dim=4)
    views = [torch.rand(2, 1, 4, 6) for _ in range(6)]
    with pytest.raises(ClBenchError, match="must be square"):
        obj(_Flat(24, 6), views, torch.zeros(2))
