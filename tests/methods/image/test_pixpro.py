"""PixPro / PixContrast: geometry, the PixContrast loss against explicit per-pixel loops, training.

PixPro's PPM and loss are tested against the official code in test_pixpro_official.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cl_bench import components
from cl_bench.data.image.types import ArrayImageSplit
from cl_bench.errors import ClBenchError
from cl_bench.methods.image.dense_augment import (
    DenseAugmentConfig,
    Views,
    crop_views,
    feature_coords,
    make_views,
    positive_mask,
)
from cl_bench.methods.momentum import momentum_at
from cl_bench.methods.image.pixpro import pixcontrast_loss, pixpro_loss
from cl_bench.specs import TrainRecipe


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_feature_coords_by_hand() -> None:
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [10.0, 20.0, 50.0, 40.0]])
    flipped = torch.tensor([False, True])
    c = feature_coords(boxes, flipped, fh=2, fw=4).numpy()
    # cell (row v, col u) of a 40 x 20 box: x = 10 + 40 (u + .5) / 4, y = 20 + 20 (v + .5) / 2
    for v in range(2):
        for u in range(4):
            assert c[0, v * 4 + u].tolist() == pytest.approx([10 + 10 * (u + 0.5), 20 + 10 * (v + 0.5)])
            # flipped view: column u of the view shows source column 3 - u
            assert c[1, v * 4 + u].tolist() == pytest.approx([10 + 10 * (3 - u + 0.5), 20 + 10 * (v + 0.5)])


def test_positive_mask_matches_explicit_distances() -> None:
    gen = torch.Generator().manual_seed(3)
    cfg = DenseAugmentConfig(out_size=16, crop_scale=(0.2, 1.0))
    images = torch.rand(3, 3, 40, 50, generator=gen)
    v1, v2 = make_views(images, cfg, gen), make_views(images, cfg, gen)
    fh = fw = 4
    thr = 0.7
    mask = positive_mask(v1, v2, fh, fw, thr).numpy()
    for n in range(3):
        def centres(v: Views, n: int = n) -> list[tuple[float, float]]:
            x0, y0, x1, y1 = v.boxes[n].tolist()
            out = []
            for r in range(fh):
                for col in range(fw):
                    tx = (col + 0.5) / fw
                    if bool(v.flipped[n]):
                        tx = 1 - tx
                    out.append((x0 + (x1 - x0) * tx, y0 + (y1 - y0) * (r + 0.5) / fh))
            return out

        def diag(v: Views, n: int = n) -> float:
            x0, y0, x1, y1 = v.boxes[n].tolist()
            return math.hypot((x1 - x0) / fw, (y1 - y0) / fh)

        a, b, scale = centres(v1), centres(v2), max(diag(v1), diag(v2))
        for i in range(fh * fw):
            for j in range(fh * fw):
                expect = math.dist(a[i], b[j]) / scale < thr
                assert mask[n, i, j] == expect


def test_identical_views_pair_each_cell_with_itself() -> None:
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    v = Views(torch.zeros(1, 3, 8, 8), boxes, torch.tensor([False]))
    mask = positive_mask(v, v, 4, 4, 0.7)[0]
    assert torch.equal(mask, torch.eye(16, dtype=torch.bool))
    vf = Views(torch.zeros(1, 3, 8, 8), boxes, torch.tensor([True]))
    mask_f = positive_mask(v, vf, 4, 4, 0.7)[0]  # cell (r, c) meets cell (r, 3 - c) of the mirror
    expect = torch.zeros(16, 16, dtype=torch.bool)
    for r in range(4):
        for c in range(4):
            expect[r * 4 + c, r * 4 + 3 - c] = True
    assert torch.equal(mask_f, expect)


def test_crop_flip_mirrors_the_same_crop() -> None:
    images = torch.rand(2, 3, 20, 30)
    boxes = torch.tensor([[3.0, 2.0, 25.0, 18.0], [3.0, 2.0, 25.0, 18.0]])
    plain = crop_views(images[:1].expand(2, -1, -1, -1).contiguous(), boxes, torch.tensor([False, True]), 12)
    assert torch.allclose(plain[1], plain[0].flip(-1))
    # a constant image gives a constant view of the requested size, whatever the box
    flat = torch.full((2, 3, 20, 30), 0.25)
    same = crop_views(flat, torch.tensor([[0.0, 0.0, 30.0, 20.0], [5.5, 1.0, 9.0, 19.0]]), torch.tensor([False, True]), 20)
    assert same.shape == (2, 3, 20, 20) and torch.allclose(same, torch.full_like(same, 0.25))


def _flat(t: torch.Tensor, n: int) -> np.ndarray:
    return t[n].flatten(1).T.detach().numpy()  # [P, D]


def test_pixcontrast_loss_matches_paper_formula() -> None:
    torch.manual_seed(2)
    q1, q2, k1, k2 = (torch.randn(2, 4, 2, 2) for _ in range(4))
    pos = torch.rand(2, 4, 4) < 0.4
    pos[0, 1] = False  # an anchor without positives is skipped
    tau = 0.3
    got = float(pixcontrast_loss(q1, q2, k1, k2, pos, tau))

    def one_way(q: torch.Tensor, k: torch.Tensor, mask: np.ndarray) -> float:
        losses = []
        for n in range(2):
            a, b = _flat(q, n), _flat(k, n)
            for i in range(4):
                if not mask[n, i].any():
                    continue
                e = [math.exp(_cos(a[i], b[j]) / tau) for j in range(4)]
                num = sum(e[j] for j in range(4) if mask[n, i, j])
                losses.append(-math.log(num / sum(e)))
        return float(np.mean(losses))

    pm = pos.numpy()
    expect = 0.5 * (one_way(q1, k2, pm) + one_way(q2, k1, pm.transpose(0, 2, 1)))
    assert got == pytest.approx(expect, abs=1e-5)


def test_losses_without_positive_pairs_are_zero_with_gradient() -> None:
    y = torch.randn(1, 4, 2, 2, requires_grad=True)
    pos = torch.zeros(1, 4, 4, dtype=torch.bool)
    loss = pixpro_loss(y, y, y.detach(), y.detach(), pos)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert y.grad is not None


def test_momentum_schedule_endpoints() -> None:
    assert momentum_at(0, 100, 0.99) == pytest.approx(0.99)
    assert momentum_at(50, 100, 0.99) == pytest.approx(0.995)
    assert momentum_at(100, 100, 0.99) == pytest.approx(1.0)


def _tiny_split() -> ArrayImageSplit:
    rng = np.random.default_rng(0)
    return ArrayImageSplit((rng.random((8, 3, 32, 32)) * 255).astype(np.uint8), np.zeros(8))


@pytest.mark.parametrize("objective,params", [("pixpro", {"instance_weight": 1.0}), ("pixcontrast", {})])
def test_train_model_is_deterministic_and_changes_the_encoder(objective: str, params: dict) -> None:
    split = _tiny_split()
    recipe = TrainRecipe(objective=objective, params={**params, "proj_hidden": 16, "proj_dim": 8}, epochs=2,
                         batch_size=4, lr=0.01, augment={"out_size": 24})
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        enc = components.get("arch", "small-resnet")({"width": 8}, in_channels=3, image_size=(32, 32))
        before = {k: v.clone() for k, v in enc.state_dict().items()}
        card = components.get("objective", objective).train_model(enc, recipe, split, 0, 5, torch.device("cpu"))
        assert card.steps == 4 and all(math.isfinite(v) for v in card.loss_curve)
        assert any(not torch.equal(before[k], v) for k, v in enc.state_dict().items())
        states.append(enc.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_bad_augment_field_is_a_clear_error() -> None:
    recipe = TrainRecipe(objective="pixpro", epochs=1, batch_size=4, lr=0.01, augment={"crop_size": 3})
    enc = components.get("arch", "small-resnet")({"width": 8}, in_channels=3, image_size=(32, 32))
    with pytest.raises(ClBenchError, match="crop_size"):
        components.get("objective", "pixpro").train_model(enc, recipe, _tiny_split(), 0, 0, torch.device("cpu"))


def test_engine_trains_pixpro_and_fine_tunes_it_on_a_dense_task(tiny_root: Path, tmp_path: Path) -> None:
    """obtain -> PixPro.train_model (cached safetensors) -> detection protocol -> result record."""
    from cl_bench.engine import RunOptions, run
    from cl_bench.registry import Registry
    from tests.conftest import write_tree

    write_tree(tiny_root, {
        "tasks/tiny-scenes-det.yaml": """
            id: tiny-scenes-det
            version: 1
            description: tiny C4 detection on scenes (test fixture)
            dataset: {name: scenes-voc, params: {n_train: 8, n_test: 4, image_size: 48}}
            protocol:
              name: detection
              params: {head: c4, iterations: 2, batch_size: 2, warmup_iters: 1, train_min_sizes: [48],
                       train_max_size: 48, test_min_size: 48, test_max_size: 48, anchor_sizes: [8, 16, 32],
                       c4_pool_size: 6, rpn_pre_nms_top_n_train: 100, rpn_post_nms_top_n_train: 50,
                       rpn_pre_nms_top_n_test: 50, rpn_post_nms_top_n_test: 30, box_batch_size_per_image: 16}
            primary_metric: AP
        """,
        "baselines/tiny-pixpro.yaml": """
            id: tiny-pixpro
            description: one-epoch PixPro (test fixture)
            provides: [image_encoder]
            arch: {name: small-resnet, params: {width: 8}}
            train: {objective: pixpro, params: {proj_hidden: 16, proj_dim: 8}, epochs: 1, batch_size: 4, lr: 0.01,
                    augment: {out_size: 32}}
        """,
    })
    reg = Registry()
    opts = RunOptions(seed=0, results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu")
    first = run(reg.task("tiny-scenes-det"), reg.method("tiny-pixpro"), opts)
    assert first.record.model_source == "trained" and first.record.recipe_hash
    assert first.model.card["objective"] == "pixpro" and first.model.card["steps"] == 2
    assert 0.0 <= first.record.metrics["AP"] <= 100.0
    again = run(reg.task("tiny-scenes-det"), reg.method("tiny-pixpro"), opts)
    assert again.model.reused and again.record.model_fingerprint == first.record.model_fingerprint
    assert again.record.metrics == first.record.metrics
