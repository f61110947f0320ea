"""``digits``: scikit-learn's bundled 1,797 real 8x8 handwritten digits, with a fixed stratified split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cl_bench.components import register
from cl_bench.data.splits import split_meta, stratified_split
from cl_bench.data.image.types import ArrayImageSplit, ImageClassificationData
from cl_bench.specs import validate_params

DIGIT_CLASS_NAMES = [str(d) for d in range(10)]


class DigitsParams(BaseModel):
    """The split is a property of the task: it never depends on the run seed."""

    model_config = ConfigDict(extra="forbid")

    test_fraction: float = Field(default=0.3, gt=0.0, lt=1.0)
    split_seed: int = Field(default=0, ge=0)


def load_digit_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as (uint8 images [N, 8, 8] in 0..255, int64 labels [N]), in sklearn's order.

    sklearn stores 17 gray levels 0..16; they are mapped to ``round(v * 255 / 16)``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.floor(bunch.images * (255.0 / 16.0) + 0.5).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def build_split_data(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    params: DigitsParams,
    meta: dict[str, Any],
) -> ImageClassificationData:
    """Wrap ``images`` [N, C, H, W] with the digits' stratified split into an ImageClassificationData."""
    train_idx, test_idx = stratified_split(labels, params.test_fraction, params.split_seed)
    train = ArrayImageSplit(images[train_idx], labels[train_idx])
    test = ArrayImageSplit(images[test_idx], labels[test_idx])
    return ImageClassificationData(
        name=name,
        train=train,
        test=test,
        class_names=list(DIGIT_CLASS_NAMES),
        in_channels=int(images.shape[1]),
        image_size=(int(images.shape[2]), int(images.shape[3])),
        meta={
            **meta,
            "test_fraction": params.test_fraction,
            "split_seed": params.split_seed,
            **split_meta(train.labels, test.labels, len(DIGIT_CLASS_NAMES)),
        },
    )


@register("dataset", "digits")
def load(params: dict[str, Any] | None, data_root: Path | None) -> ImageClassificationData:
    """The plain digits (no download; ``data_root`` is ignored)."""
    p = validate_params(DigitsParams, params, "dataset 'digits' params")
    images, labels = load_digit_arrays()
    return build_split_data("digits", images[:, None], labels, p, {"source": "sklearn.datasets.load_digits"})
