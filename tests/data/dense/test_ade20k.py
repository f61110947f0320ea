"""ADE20K loader: the official layout, mmseg's reduce_zero_label (0 -> 255, k -> k - 1), clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cl_bench import components
from cl_bench.data.dense.ade20k import ADE20K_CLASSES
from cl_bench.errors import ClBenchError


def write_tree(root: Path, values: np.ndarray) -> Path:
    ade = root / "ADEChallengeData2016"
    for split, prefix in (("training", "ADE_train_"), ("validation", "ADE_val_")):
        (ade / "images" / split).mkdir(parents=True)
        (ade / "annotations" / split).mkdir(parents=True)
        h, w = values.shape
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(ade / "images" / split / f"{prefix}00000001.jpg")
        Image.fromarray(values, mode="L").save(ade / "annotations" / split / f"{prefix}00000001.png")
    return ade


def test_reduce_zero_label_and_150_classes(tmp_path: Path) -> None:
    values = np.array([[0, 1, 2], [150, 149, 0]], np.uint8)
    write_tree(tmp_path, values)
    data = components.get("dataset", "ade20k")({}, tmp_path)
    assert data.num_classes == 150 and len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
    assert ADE20K_CLASSES[:3] == ["wall", "building", "sky"] and ADE20K_CLASSES[-1] == "flag"
    # by hand: 0 ("other") is ignored, 1 (wall) -> 0, 2 -> 1, 150 (flag) -> 149, 149 -> 148
    assert data.test.label_map(0).tolist() == [[255, 0, 1], [149, 148, 255]]
    assert len(data.train) == 1 and data.prompt_names is None


def test_layout_errors(tmp_path: Path) -> None:
    load = components.get("dataset", "ade20k")
    with pytest.raises(ClBenchError, match="needs real data"):
        load({}, None)
    with pytest.raises(ClBenchError, match="ADEChallengeData2016 is missing"):
        load({}, tmp_path)
    ade = write_tree(tmp_path, np.zeros((4, 4), np.uint8))
    (ade / "annotations" / "validation" / "ADE_val_00000001.png").unlink()
    with pytest.raises(ClBenchError, match="annotation .* is missing"):
        load({}, tmp_path)


def test_out_of_range_values_refused(tmp_path: Path) -> None:
    write_tree(tmp_path, np.array([[0, 151]], np.uint8))
    data = components.get("dataset", "ade20k")({}, tmp_path)
    with pytest.raises(ClBenchError, match="0 \\(other\\) .. 150"):
        data.test.label_map(0)
