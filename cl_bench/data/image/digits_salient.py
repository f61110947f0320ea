"""``digits-salient``: a contrastive-analysis pair built from the hard digits (for SepCLR).

Every one of the 1,797 hard digits (``digits-hard``, same generation params) goes to exactly
one of two sets, half of each digit class to each (fixed by ``dataset_seed``):

- background (group 0): the hard digit as is — only the common pattern (the digit);
- target (group 1): the hard digit plus a salient pattern — a full-canvas grating of one of
  four orientations (0°, 45°, 90°, 135°; ``salient`` label 0..3, balanced and independent
  of the digit), period ``pattern_period`` px, random phase, amplitude ``pattern_amplitude``
  (added to the [0, 1] pixels, then clipped).

Split: stratified over (group, orientation, digit), ``test_fraction`` / ``split_seed``.
The splits' ``labels`` are the groups (what SepCLR trains on); ``common_labels`` (the digit)
and ``salient_labels`` (the orientation; -1 in the background) are what the
``salient_separation`` protocol probes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from cl_bench.components import register
from cl_bench.data.image.digits_hard import DigitsHardParams, render_digits_hard
from cl_bench.data.splits import split_meta, stratified_split
from cl_bench.data.image.types import ArrayImageSplit, ImageClassificationData, fingerprint_arrays
from cl_bench.specs import validate_params

GROUP_NAMES = ["background", "target"]
PATTERN_NAMES = ["grating-0", "grating-45", "grating-90", "grating-135"]
DIGIT_NAMES = [str(d) for d in range(10)]


class DigitsSalientParams(DigitsHardParams):
    target_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    pattern_period: float = Field(default=5.0, ge=2.0, le=64.0)
    pattern_amplitude: float = Field(default=0.2, ge=0.0, le=1.0)
    pattern_seed: int = Field(default=0, ge=0)


class SalientSplit(ArrayImageSplit):
    """An image split whose ``labels`` are groups (0 background, 1 target), with the common
    (digit) and salient (pattern; -1 for background) labels of every image."""

    def __init__(self, images: np.ndarray, groups: np.ndarray, common: np.ndarray, salient: np.ndarray) -> None:
        super().__init__(images, groups)
        self.common_labels = np.asarray(common, dtype=np.int64)
        self.salient_labels = np.asarray(salient, dtype=np.int64)
        if not len(self.common_labels) == len(self.salient_labels) == len(self.labels):
            raise ValueError("groups, common and salient labels must have one entry per image")
        self.fingerprint = fingerprint_arrays(
            self.images, self.labels, self.common_labels, self.salient_labels, extra="salient-split"
        )


def grating(size: int, angle_deg: float, period: float, phase: float) -> np.ndarray:
    """cos(2π (x cos θ + y sin θ) / period + phase) on a size x size pixel grid, in [-1, 1]."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = math.radians(angle_deg)
    return np.cos(2 * math.pi * (xs * math.cos(theta) + ys * math.sin(theta)) / period + phase)


def assign_groups(digits: np.ndarray, target_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(group [N] 0/1, pattern [N] 0..3 or -1): per digit class a random ``target_fraction`` are
    targets; the targets' patterns cycle 0..3 over a random order (balanced, digit-independent)."""
    n = len(digits)
    group = np.zeros(n, dtype=np.int64)
    for d in np.unique(digits):
        idx = np.flatnonzero(digits == d)
        idx = idx[rng.permutation(len(idx))]
        group[idx[: round(len(idx) * target_fraction)]] = 1
    pattern = np.full(n, -1, dtype=np.int64)
    targets = np.flatnonzero(group == 1)
    pattern[targets[rng.permutation(len(targets))]] = np.arange(len(targets)) % len(PATTERN_NAMES)
    return group, pattern


def render_digits_salient(p: DigitsSalientParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 images [N, 1, C, C], group, digit, pattern); same params -> identical bytes."""
    hard, digits = render_digits_hard(p)
    rng = np.random.Generator(np.random.PCG64([p.pattern_seed, 7]))
    group, pattern = assign_groups(digits, p.target_fraction, rng)
    phases = rng.uniform(0.0, 2 * math.pi, len(digits))
    pixels = hard.astype(np.float64) / 255.0
    for i in np.flatnonzero(group == 1):
        angle = 45.0 * pattern[i]
        pixels[i, 0] += p.pattern_amplitude * grating(p.canvas, angle, p.pattern_period, phases[i])
    images = np.floor(np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return images, group, digits, pattern


@register("dataset", "digits-salient")
def load(params: dict[str, Any] | None, data_root: Path | None) -> ImageClassificationData:
    """Background (plain hard digits) and target (hard digits + gratings) sets (generated; no data_root)."""
    p = validate_params(DigitsSalientParams, params, "dataset 'digits-salient' params")
    images, group, digits, pattern = render_digits_salient(p)
    strata = group * 100 + (pattern + 1) * 10 + digits
    train_idx, test_idx = stratified_split(strata, p.test_fraction, p.split_seed)

    def split(idx: np.ndarray) -> SalientSplit:
        return SalientSplit(images[idx], group[idx], digits[idx], pattern[idx])

    train, test = split(train_idx), split(test_idx)
    return ImageClassificationData(
        name="digits-salient",
        train=train,
        test=test,
        class_names=list(GROUP_NAMES),
        in_channels=1,
        image_size=(p.canvas, p.canvas),
        meta={
            "source": "sklearn.datasets.load_digits, re-rendered (digits-hard) + gratings on the target half",
            "generator": p.model_dump(mode="json"),
            "common_names": DIGIT_NAMES,
            "salient_names": PATTERN_NAMES,
            **split_meta(train.labels, test.labels, len(GROUP_NAMES)),
        },
    )
