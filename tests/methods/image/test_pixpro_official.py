"""PixPro against an independent rewrite of the official code (zdaxie/PixPro, contrast/models/PixPro.py).

The reference below is written from the official source, not from cl_bench/methods/image/pixpro.py:

- ``featprop``: ``value = normalize(value_transform(feat))``, ``att = clamp(cos(feat_i, feat_j),
  min=clamp_value)`` (+1e-6 when p < 1) ``** p``, ``out_i = Σ_j att_ij value_j``;
- ``regression_loss(q, k, coord_q, coord_k, pos_ratio)``: crop coordinates normalised to the
  image (a horizontal flip swaps x_upper_left and x_lower_right), bin centres
  ``(x + 0.5) * bin_width + start``, positive where the centre distance divided by the larger bin
  diagonal is below pos_ratio, ``-2 * mean_n (Σ_pos q_i·k_j / (#pos_n + 1e-6))``;
- ``forward``: each view through the encoder and heads on its own, ``pred = normalize(featprop(proj))``,
  keys ``normalize(projector_k(encoder_k(im)))``, loss ``regression_loss(pred_1, proj_2_ng, coord1, coord2)
  + regression_loss(pred_2, proj_1_ng, coord2, coord1)``; the instance branch pools *after* its 1x1
  projector / predictor, ``-2 * mean_n (p_n·z_n)`` both ways, times ``pixpro_ins_loss_weight``.

Numbers are computed with per-pixel numpy loops on random weights and hand-placed crops (one
image whose crops do not overlap, flips on either side), not on anything the implementation was tuned on.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cl_bench import components
from cl_bench.methods.image.dense_augment import Views, positive_mask
from cl_bench.methods.image.pixpro import pixpro_loss, ppm

SOURCE = 100.0  # square source images: the official coordinates are fractions of the image side


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def official_featprop(feat: np.ndarray, value: np.ndarray, p: float, clamp_value: float = 0.0) -> np.ndarray:
    """feat, value (= value_transform(feat)): [N, C, H, W] -> [N, C, H, W], one pixel at a time."""
    n, c, h, w = feat.shape
    out = np.zeros_like(value, dtype=np.float64)
    for b in range(n):
        f = _unit_rows(feat[b].reshape(c, h * w).T.astype(np.float64))  # [P, C]
        v = _unit_rows(value[b].reshape(c, h * w).T.astype(np.float64))
        for i in range(h * w):
            acc = np.zeros(c)
            for j in range(h * w):
                att = max(float(f[i] @ f[j]), clamp_value)
                if p < 1:
                    att += 1e-6
                acc += att ** p * v[j]
            out[b, :, i // w, i % w] = acc
    return out


def official_coord(box: list[float], flipped: bool) -> list[float]:
    """RandomResizedCropCoord + RandomHorizontalFlipCoord: (x0, y0, x1, y1) as image fractions, x swapped on a flip."""
    x0, y0, x1, y1 = (c / SOURCE for c in box)
    return [x1, y0, x0, y1] if flipped else [x0, y0, x1, y1]


def official_regression_loss(q: np.ndarray, k: np.ndarray, coord_q: list[list[float]], coord_k: list[list[float]],
                             pos_ratio: float) -> float:
    """q, k: [N, C, H, W] (unit vectors per pixel); coords: one (x0, y0, x1, y1) per image."""
    n, c, h, w = q.shape
    per_image = []
    for b in range(n):
        cq, ck = coord_q[b], coord_k[b]
        qbw, qbh = (cq[2] - cq[0]) / w, (cq[3] - cq[1]) / h
        kbw, kbh = (ck[2] - ck[0]) / w, (ck[3] - ck[1]) / h
        max_diag = max(np.hypot(qbw, qbh), np.hypot(kbw, kbh))
        total, count = 0.0, 0
        for i in range(h * w):
            qx, qy = (i % w + 0.5) * qbw + cq[0], (i // w + 0.5) * qbh + cq[1]
            for j in range(h * w):
                kx, ky = (j % w + 0.5) * kbw + ck[0], (j // w + 0.5) * kbh + ck[1]
                if np.hypot(qx - kx, qy - ky) / max_diag < pos_ratio:
                    total += float(q[b, :, i // w, i % w] @ k[b, :, j // w, j % w])
                    count += 1
        per_image.append(total / (count + 1e-6))
    return -2.0 * float(np.mean(per_image))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _unit_channels(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _last_map(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    maps = encoder.feature_maps(x)
    return maps[list(maps)[-1]]


def official_forward(encoder: nn.Module, projector: nn.Module, value_transform: nn.Module, target: nn.ModuleList,
                     inst: tuple[nn.Module, nn.Module] | None, im: tuple[torch.Tensor, torch.Tensor],
                     coords: tuple[list[list[float]], list[list[float]]], p: float, pos_ratio: float,
                     ins_weight: float) -> float:
    """The official ``PixPro.forward`` loss (after its momentum update), on the given modules."""
    preds, keys, inst_preds, inst_keys = [], [], [], []
    for x in im:  # each view on its own
        feat = _last_map(encoder, x)
        proj = projector(feat)
        preds.append(_unit_channels(official_featprop(_np(proj), _np(value_transform(proj)), p)))
        with torch.no_grad():
            feat_ng = _last_map(target[0], x)
            keys.append(_unit_channels(_np(target[1](feat_ng))))
        if inst is not None:
            pooled = _np(inst[1](inst[0](feat))).mean(axis=(2, 3))  # avgpool after projector and predictor
            inst_preds.append(_unit_rows(pooled))
            with torch.no_grad():
                inst_keys.append(_unit_rows(_np(target[2](feat_ng)).mean(axis=(2, 3))))
    loss = (official_regression_loss(preds[0], keys[1], coords[0], coords[1], pos_ratio)
            + official_regression_loss(preds[1], keys[0], coords[1], coords[0], pos_ratio))
    if inst is not None:
        loss_instance = (-2.0 * float(np.mean(np.sum(inst_preds[0] * inst_keys[1], axis=1)))
                         - 2.0 * float(np.mean(np.sum(inst_preds[1] * inst_keys[0], axis=1))))
        loss += ins_weight * loss_instance
    return loss


# crops (source pixels) of 3 images, two views each: overlapping, overlapping with flips, disjoint
BOXES_1 = [[5.0, 10.0, 75.0, 70.0], [0.0, 0.0, 60.0, 90.0], [0.0, 0.0, 30.0, 30.0]]
BOXES_2 = [[20.0, 5.0, 90.0, 85.0], [10.0, 15.0, 80.0, 75.0], [65.0, 60.0, 100.0, 100.0]]
FLIP_1 = [False, True, False]
FLIP_2 = [True, True, False]


@pytest.mark.parametrize("gamma,layers,ins_weight", [(2.0, 1, 0.0), (0.5, 2, 0.7), (1.0, 0, 1.0)])
def test_pixpro_objective_equals_the_official_forward(gamma: float, layers: int, ins_weight: float) -> None:
    torch.manual_seed(11)
    encoder = components.get("arch", "small-resnet")({"width": 8}, in_channels=3, image_size=(32, 32))
    obj = components.get("objective", "pixpro")(embed_dim=32, num_classes=0, instance_dim=32, proj_hidden=24,
                                                proj_dim=12, gamma=gamma, transform_layers=layers,
                                                threshold=0.7, instance_weight=ins_weight)
    target = nn.ModuleList([copy.deepcopy(encoder), *[copy.deepcopy(m) for m in obj.online()]])
    with torch.no_grad():  # a momentum encoder that has drifted from the online one
        for prm in target.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    for m in (encoder, obj, target):
        m.train()
    gen = torch.Generator().manual_seed(5)
    im1, im2 = torch.rand(3, 3, 32, 32, generator=gen), torch.rand(3, 3, 32, 32, generator=gen)
    v1 = Views(im1, torch.tensor(BOXES_1), torch.tensor(FLIP_1))
    v2 = Views(im2, torch.tensor(BOXES_2), torch.tensor(FLIP_2))
    got = obj.loss(encoder, target, v1, v2)
    coords = ([official_coord(b, f) for b, f in zip(BOXES_1, FLIP_1)],
              [official_coord(b, f) for b, f in zip(BOXES_2, FLIP_2)])
    inst = (obj.inst_projector, obj.predictor) if ins_weight > 0 else None
    expect = official_forward(encoder, obj.projector, obj.transform, target, inst, (im1, im2), coords, gamma, 0.7,
                              ins_weight)
    assert float(got["loss"].detach()) == pytest.approx(expect, abs=1e-5)
    assert float(got["positives_per_image"]) > 0  # images 0 and 1 have positive pairs, image 2 none


def test_featprop_normalises_the_values_as_the_official_code() -> None:
    torch.manual_seed(4)
    x = torch.randn(2, 6, 3, 4)
    conv = nn.Conv2d(6, 6, 1)
    for gamma in (2.0, 0.5):
        got = ppm(x, conv, gamma).detach().double().numpy()
        expect = official_featprop(_np(x), _np(conv(x)), gamma)
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)
    # the value vectors are unit length: scaling the transform's output leaves the propagation unchanged
    with torch.no_grad():
        big = ppm(x, lambda t: 7.0 * conv(t), 2.0)
    np.testing.assert_allclose(big.numpy(), ppm(x, conv, 2.0).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_regression_loss_counts_images_without_positives_in_the_batch_mean() -> None:
    """Two images, the second with crops that never meet: the official mean is over both images."""
    torch.manual_seed(9)
    obj = components.get("objective", "pixpro")(embed_dim=4, num_classes=0, proj_hidden=4, proj_dim=4)
    y1, y2, k1, k2 = (torch.randn(2, 5, 3, 3) for _ in range(4))
    b1, b2 = [[0.0, 0.0, 60.0, 60.0], [0.0, 0.0, 20.0, 20.0]], [[10.0, 10.0, 70.0, 70.0], [80.0, 80.0, 100.0, 100.0]]
    v1 = Views(torch.zeros(2, 3, 8, 8), torch.tensor(b1), torch.tensor([False, False]))
    v2 = Views(torch.zeros(2, 3, 8, 8), torch.tensor(b2), torch.tensor([False, True]))
    pos = positive_mask(v1, v2, 3, 3, obj.params.threshold)
    assert bool(pos[0].any()) and not bool(pos[1].any())
    got = float(pixpro_loss(y1, y2, k1, k2, pos))
    c1 = [official_coord(b, False) for b in b1]
    c2 = [official_coord(b, f) for b, f in zip(b2, [False, True])]
    u = [_unit_channels(_np(t)) for t in (y1, y2, k1, k2)]
    expect = official_regression_loss(u[0], u[3], c1, c2, 0.7) + official_regression_loss(u[1], u[2], c2, c1, 0.7)
    assert got == pytest.approx(expect, abs=1e-5)


def test_objective_version_marks_results_and_checkpoints_of_the_older_code() -> None:
    """pixpro is past version 1: its method hash carries it; version-1 objectives hash as before."""
    from cl_bench.registry import Registry
    from cl_bench.specs import canonical_hash

    reg = Registry()
    for mid, version in (("pixpro", 2), ("pixcontrast", 1), ("simclr", 1), ("dcl", 1)):
        m = reg.method(mid)
        plain = m.model_dump(mode="json", exclude={"description", "tags", "paper", "released", "by_task"})
        expect = canonical_hash(plain if version == 1 else {**plain, "objective_version": version})
        assert m.spec_hash() == expect
