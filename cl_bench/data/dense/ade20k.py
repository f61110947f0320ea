"""ADE20K (SceneParsing / MIT ADEChallengeData2016) semantic segmentation, dataset ``ade20k``.

Official layout under ``--data-root``::

    ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_XXXXXXXX.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_XXXXXXXX.png

(20,210 training / 2,000 validation images). An annotation is a single-channel PNG of values
0..150: 0 is "other objects" and 1..150 the benchmark's classes. As mmsegmentation's
``ADE20KDataset`` (``reduce_zero_label=True``), 0 becomes the ignore index 255 and ``k`` becomes
``k - 1``, so the 150 classes are ``0..149`` in :data:`ADE20K_CLASSES`' order (mmseg's ``CLASSES``;
the objectInfo150 names' first word list).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cl_bench.components import register
from cl_bench.data.data_root import need_root
from cl_bench.data.dense.types import IGNORE_INDEX, SegmentationData, SegmentationSplit
from cl_bench.data.image_decode import open_image
from cl_bench.errors import ClBenchError
from cl_bench.params import Strict

ADE20K_CLASSES: list[str] = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator",
    "glass", "clock", "flag",
]
SPLITS = {"training": "ADE_train_", "validation": "ADE_val_"}


def _reduce_zero_label() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[1:151] = np.arange(150, dtype=np.uint8)
    return lut


_LUT = _reduce_zero_label()


def read_ade20k_label(path: Path) -> np.ndarray:
    """uint8 [H, W] of class ids 0..149 (255 = "other" / ignore) from an annotation PNG."""
    with open_image(path, f"annotation {path}") as im:
        if im.mode not in ("L", "P"):
            raise ClBenchError(f"{path}: an ADE20K annotation is a single-channel 8-bit PNG, got mode {im.mode}")
        arr = np.asarray(im, dtype=np.uint8)
    if arr.size and arr.max() > 150:
        raise ClBenchError(f"{path}: values up to {int(arr.max())}; ADE20K annotations hold 0 (other) .. 150")
    return _LUT[arr]


def list_ade20k_split(root: Path, split: str) -> tuple[list[Path], list[Path]]:
    """(images, annotations) of ``split`` (``training`` / ``validation``), sorted by file name."""
    img_dir, ann_dir = root / "images" / split, root / "annotations" / split
    layout = f"expected {root}/images/{split}/*.jpg and {root}/annotations/{split}/*.png"
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise ClBenchError(f"{img_dir if not img_dir.is_dir() else ann_dir} is missing; {layout}")
    images = sorted(img_dir.glob("*.jpg"))
    if not images:
        raise ClBenchError(f"no *.jpg under {img_dir}: the split is empty; {layout}")
    labels = []
    for img in images:
        lab = ann_dir / f"{img.stem}.png"
        if not lab.is_file():
            raise ClBenchError(f"annotation {lab} is missing for image {img.name}; {layout}")
        labels.append(lab)
    return images, labels


class Ade20kParams(Strict):
    root: str = "ADEChallengeData2016"
    train_split: str = "training"
    test_split: str = "validation"
    image_size: tuple[int, int] = (512, 512)  # nominal, for arch builders


@register("dataset", "ade20k", params=Ade20kParams)
def load_ade20k(p: Ade20kParams, data_root: Path | None) -> SegmentationData:
    """ADE20K SceneParsing, 150 classes (0 = other -> ignored), mmseg's reduce_zero_label."""
    layout = (f"expected DATA_ROOT/{p.root}/images/{{training,validation}}/*.jpg and "
              f"DATA_ROOT/{p.root}/annotations/{{training,validation}}/*.png")
    root = need_root(data_root, "ade20k", layout) / p.root
    if not root.is_dir():
        raise ClBenchError(f"{root} is missing; {layout}")
    splits = []
    for split in (p.train_split, p.test_split):
        images, labels = list_ade20k_split(root, split)
        splits.append(SegmentationSplit(images, labels, read_ade20k_label, len(ADE20K_CLASSES), tag=split))
    return SegmentationData("ade20k", splits[0], splits[1], list(ADE20K_CLASSES), image_size=tuple(p.image_size),
                            meta={"root": str(root), "train_split": p.train_split, "test_split": p.test_split})
