"""Cityscapes semantic segmentation in its official layout: labelIds -> the 19 trainIds.

``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with
``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png``. The labelId -> trainId table is
cityscapesScripts' ``helpers/labels.py`` (19 evaluated classes; every other id, including
unlabeled, ego vehicle, static, parking, guard rail, caravan, trailer and license plate -> 255),
hard-coded here. A label file that is missing, not 8-bit single-channel, or of a different size
than its image is a ClBenchError; so is a split without images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from cl_bench.components import register
from cl_bench.data.data_root import need_root
from cl_bench.data.dense.types import IGNORE_INDEX, SegmentationData, SegmentationSplit
from cl_bench.data.image_decode import open_image
from cl_bench.errors import ClBenchError
from cl_bench.specs import validate_params

CITYSCAPES_CLASSES: list[str] = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
]
LABEL_TO_TRAIN: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
THING_TRAIN_IDS: tuple[int, ...] = (5, 6, 7, 11, 12, 13, 14, 15, 16, 17, 18)  # objects, not "stuff"


def label_lut() -> np.ndarray:
    """uint8 [256]: labelId -> trainId (255 for every id outside the 19 classes)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, train_id in LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    return lut


_LUT = label_lut()


def read_label_ids(path: Path) -> np.ndarray:
    """uint8 [H, W] labelIds from a ``*_gtFine_labelIds.png``."""
    if not path.exists() and not path.is_symlink():
        raise ClBenchError(
            f"label file {path} is missing; expected gtFine/<split>/<city>/<stem>_gtFine_labelIds.png")
    with open_image(path, f"label file {path}") as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise ClBenchError(f"{path}: labelIds PNG must be single-channel, got mode {im.mode}")
        arr = np.asarray(im)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ClBenchError(f"{path}: labelIds out of 0..255")
    return arr.astype(np.uint8)


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    return _LUT[label_ids]


def read_train_ids(path: Path) -> np.ndarray:
    """A labelIds PNG mapped to trainIds (uint8, 255 = ignore)."""
    return label_ids_to_train_ids(read_label_ids(path))


def list_cityscapes_split(root: Path, split: str) -> tuple[list[Path], list[Path]]:
    """(images, labelIds files) of ``split``, sorted by city then file name."""
    img_dir = root / "leftImg8bit" / split
    if not img_dir.is_dir():
        raise ClBenchError(
            f"{img_dir} is missing; expected <root>/leftImg8bit/{split}/<city>/*_leftImg8bit.png "
            f"and <root>/gtFine/{split}/<city>/*_gtFine_labelIds.png"
        )
    images = sorted(img_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise ClBenchError(f"no *_leftImg8bit.png under {img_dir}/<city>/: the split is empty")
    labels = []
    for img in images:
        stem = img.name[: -len("_leftImg8bit.png")]
        lab = root / "gtFine" / split / img.parent.name / f"{stem}_gtFine_labelIds.png"
        if not lab.is_file():
            raise ClBenchError(f"label file {lab} is missing for image {img.name}")
        with open_image(img) as a, open_image(lab) as b:  # headers only
            if a.size != b.size:
                raise ClBenchError(
                    f"label file {lab.name} is {b.size[0]}x{b.size[1]} but its image {img.name} is "
                    f"{a.size[0]}x{a.size[1]}; they must match pixel for pixel"
                )
        labels.append(lab)
    return images, labels


# ----------------------------------------------------------------------------- dataset ``cityscapes``


class CityscapesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = "cityscapes"
    train_split: str = "train"
    test_split: str = "val"
    image_size: tuple[int, int] = (1024, 2048)  # nominal, for arch builders


def cityscapes_data(name: str, root: Path, train_split: str, test_split: str, image_size: tuple[int, int],
                     cache_images: bool, meta: dict[str, Any]) -> SegmentationData:
    splits = []
    for split in (train_split, test_split):
        images, labels = list_cityscapes_split(root, split)
        splits.append(SegmentationSplit(images, labels, read_train_ids, len(CITYSCAPES_CLASSES),
                                        thing_classes=THING_TRAIN_IDS, cache_images=cache_images, tag=split))
    return SegmentationData(name, splits[0], splits[1], list(CITYSCAPES_CLASSES), image_size=image_size,
                            meta={**meta, "train_split": train_split, "test_split": test_split})


@register("dataset", "cityscapes")
def load_cityscapes(params: dict[str, Any] | None, data_root: Path | None) -> SegmentationData:
    """Cityscapes fine annotations: labelIds mapped to the 19 trainIds (others 255)."""
    p = validate_params(CityscapesParams, params, "dataset 'cityscapes' params")
    layout = (f"expected DATA_ROOT/{p.root}/leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
              f"DATA_ROOT/{p.root}/gtFine/<split>/<city>/*_gtFine_labelIds.png")
    root = need_root(data_root, "cityscapes", layout) / p.root
    if not root.is_dir():
        raise ClBenchError(f"{root} is missing; {layout}")
    return cityscapes_data("cityscapes", root, p.train_split, p.test_split, tuple(p.image_size), False,
                            {"root": str(root)})
