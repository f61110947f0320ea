"""The embedded digits datasets: plain ``digits`` and its hard twin ``digits-hard``."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from cl_bench import components
from cl_bench.data.image.digits_hard import DigitsHardParams, render_digits_hard
from cl_bench.data.splits import stratified_split
from cl_bench.data.image.types import ArrayImageSplit
from cl_bench.errors import ClBenchError

N_DIGITS = 1797


def load(name: str, **params: object):
    return components.get("dataset", name)(params, None)


@pytest.fixture(scope="module")
def sk() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    return bunch.images, bunch.target


@pytest.fixture(scope="module")
def plain():
    return load("digits")


@pytest.fixture(scope="module")
def hard():
    return load("digits-hard")


def as_rows(split: ArrayImageSplit) -> list[bytes]:
    return [img.tobytes() for img in split.images]


# ---------------------------------------------------------------- digits


def test_digits_shapes_and_pixel_scaling(plain) -> None:
    assert plain.in_channels == 1 and plain.image_size == (8, 8) and plain.num_classes == 10
    assert plain.class_names == [str(d) for d in range(10)]
    assert len(plain.train) + len(plain.test) == N_DIGITS
    x, y = plain.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and isinstance(y, int)
    everything = np.concatenate([plain.train.images, plain.test.images])
    assert everything.dtype == np.uint8 and everything.min() == 0 and everything.max() == 255
    # 17 gray levels 0..16 map to round(v * 255 / 16): 8 -> 128, 16 -> 255
    levels = sorted({int(v) for v in np.unique(everything)})
    assert levels == [int(np.floor(v * 255 / 16 + 0.5)) for v in range(17)]
    assert levels[8] == 128


def test_digits_split_is_stratified_disjoint_and_complete(plain, sk) -> None:
    images, target = sk
    train_idx, test_idx = stratified_split(target, 0.3, 0)
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    assert sorted(np.concatenate([train_idx, test_idx]).tolist()) == list(range(N_DIGITS))
    for cls in range(10):  # explicit per-class count
        n = sum(1 for t in target if t == cls)
        n_test = sum(1 for i in test_idx if target[i] == cls)
        assert n_test == int(np.floor(n * 0.3 + 0.5))
    # the loader uses exactly these indices, in this order
    expected = np.floor(images[test_idx] * 255 / 16 + 0.5).astype(np.uint8)
    assert np.array_equal(plain.test.images[:, 0], expected)
    assert np.array_equal(plain.test.labels, target[test_idx])
    assert np.array_equal(plain.train.labels, target[train_idx])


def test_digits_meta_records_sizes_and_class_counts(plain) -> None:
    meta = plain.meta
    assert meta["train_size"] == len(plain.train) and meta["test_size"] == len(plain.test)
    assert meta["train_class_counts"] == [int((plain.train.labels == c).sum()) for c in range(10)]
    assert meta["test_class_counts"] == [int((plain.test.labels == c).sum()) for c in range(10)]
    assert meta["test_fraction"] == 0.3 and meta["split_seed"] == 0


def test_digits_split_ignores_global_rng_state() -> None:
    np.random.seed(1)
    torch.manual_seed(1)
    random.seed(1)
    first = load("digits")
    np.random.seed(12345)
    torch.manual_seed(999)
    random.seed(7)
    state = np.random.get_state()[1].copy()
    torch_state = torch.get_rng_state().clone()
    second = load("digits")
    assert first.fingerprint == second.fingerprint
    assert np.array_equal(first.test.images, second.test.images)
    assert np.array_equal(first.train.labels, second.train.labels)
    assert np.array_equal(np.random.get_state()[1], state)  # global RNGs untouched
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_digits_split_seed_and_fraction_change_the_split(plain) -> None:
    other = load("digits", split_seed=1)
    assert other.fingerprint != plain.fingerprint
    assert set(as_rows(other.test)) != set(as_rows(plain.test))
    half = load("digits", test_fraction=0.5)
    assert abs(len(half.test) - N_DIGITS / 2) <= 5


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"test_fraction": 1.5}, "test_fraction"),
        ({"split_seed": -1}, "split_seed"),
        ({"colour": 1}, "colour"),
    ],
)
def test_digits_bad_params_name_the_field(params: dict, field: str) -> None:
    with pytest.raises(ClBenchError, match=field):
        components.get("dataset", "digits")(params, None)


def test_stratified_split_keeps_both_sides_of_small_classes() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    train, test = stratified_split(labels, 0.1, 3)
    assert sorted(labels[test].tolist()) == [0, 1, 2]  # 0.2 and 0.3 round to 0, clamped up to 1
    assert sorted(labels[train].tolist()) == [0, 1, 1] + [2] * 9


# ---------------------------------------------------------------- digits-hard


def test_digits_hard_shapes_and_registration(hard) -> None:
    assert hard.in_channels == 1 and hard.image_size == (32, 32)
    assert hard.train.images.shape[1:] == (1, 32, 32) and hard.train.images.dtype == np.uint8
    assert len(hard.train) + len(hard.test) == N_DIGITS
    small = load("digits-hard", canvas=24, digit_size=14)
    assert small.image_size == (24, 24) and small.test.images.shape[1:] == (1, 24, 24)


def test_digits_hard_labels_and_split_match_plain_digits(plain, hard, sk) -> None:
    _, target = sk
    images, labels = render_digits_hard()
    assert np.array_equal(labels, target)
    assert np.array_equal(hard.train.labels, plain.train.labels)
    assert np.array_equal(hard.test.labels, plain.test.labels)
    _, test_idx = stratified_split(target, 0.3, 0)
    assert np.array_equal(hard.test.images, images[test_idx])
    other = load("digits-hard", split_seed=4, test_fraction=0.25)
    plain_other = load("digits", split_seed=4, test_fraction=0.25)
    assert np.array_equal(other.test.labels, plain_other.test.labels)


def test_digits_hard_is_deterministic_per_dataset_seed() -> None:
    np.random.seed(0)
    torch.manual_seed(0)
    a, _ = render_digits_hard({"dataset_seed": 3})
    np.random.seed(99)
    torch.manual_seed(99)
    b, _ = render_digits_hard({"dataset_seed": 3})
    c, _ = render_digits_hard({"dataset_seed": 4})
    assert np.array_equal(a, b)
    assert (a != c).mean() > 0.5


def test_digits_hard_without_perturbations_is_the_centred_upsampled_digit(sk) -> None:
    images, _ = sk
    params = {
        "canvas": 32,
        "digit_size": 16,
        "max_rotation": 0.0,
        "scale_range": [1.0, 1.0],
        "max_shift": 0.0,
        "contrast_range": [1.0, 1.0],
        "max_background": 0.0,
        "noise_std": 0.0,
        "clutter": 0,
    }
    out, _ = render_digits_hard(params)
    u8 = np.floor(images[:20] * 255 / 16 + 0.5) / 255.0
    up = F.interpolate(torch.from_numpy(u8)[:, None], size=(16, 16), mode="bicubic", align_corners=False)
    expected = np.floor(up.clamp(0, 1).numpy() * 255 + 0.5)
    centre = out[:20, :, 8:24, 8:24].astype(np.float64)
    assert np.abs(centre - expected).max() <= 1
    border = out[:, :, np.r_[0:8, 24:32]].astype(np.float64)
    assert border.max() == 0


def test_digits_hard_clutter_only_adds_ink() -> None:
    clean = {"contrast_range": [1.0, 1.0], "max_background": 0.0, "noise_std": 0.0}
    without, _ = render_digits_hard({**clean, "clutter": 0})
    with_clutter, _ = render_digits_hard({**clean, "clutter": 2})
    assert (with_clutter.astype(int) >= without.astype(int)).all()
    added = (with_clutter > without.astype(int) + 20).reshape(len(without), -1).any(1)
    assert added.mean() > 0.5  # most images gained a fragment somewhere


def test_digits_hard_raw_pixels_fall_far_below_plain(plain, hard) -> None:
    def raw_logistic(data) -> float:
        x_tr = data.train.tensor().flatten(1).numpy()
        x_te = data.test.tensor().flatten(1).numpy()
        scaler = StandardScaler().fit(x_tr)
        clf = LogisticRegression(max_iter=300).fit(scaler.transform(x_tr), data.train.labels)
        return float(clf.score(scaler.transform(x_te), data.test.labels))

    plain_acc, hard_acc = raw_logistic(plain), raw_logistic(hard)
    assert plain_acc > 0.93
    assert hard_acc <= plain_acc - 0.25
    assert hard_acc > 0.2  # still well above chance (0.1): the digits are in there


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"canvas": 4}, "canvas"),
        ({"scale_range": [1.2, 0.9]}, "scale_range"),
        ({"contrast_range": [0.5, 1.5]}, "contrast_range"),
        ({"noise": 0.1}, "noise"),
    ],
)
def test_digits_hard_bad_params_name_the_field(params: dict, field: str) -> None:
    with pytest.raises(ClBenchError, match=field):
        components.get("dataset", "digits-hard")(params, None)


def test_digits_hard_params_defaults_round_trip() -> None:
    p = DigitsHardParams()
    assert DigitsHardParams.model_validate(p.model_dump(mode="json")) == p
