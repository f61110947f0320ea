"""``imagefolder``: a torchvision-style tree ``DATA_ROOT/<root>/{train,val}/<class>/<image>``.

Images are decoded lazily (PIL) and given the MoCo/SimCLR evaluation transform: resize the
shorter side to ``resize`` (bilinear), center-crop ``crop`` x ``crop``, float in [0, 1].
Classes are the sorted class-folder names and must be the same in both splits.

The fingerprint hashes the transform, the class names and every image's relative path, file
size and label — not the file contents (hashing an ImageNet-sized tree would take minutes), so
an in-place edit that keeps a file's size is not detected.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torchvision.transforms.functional as TF
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cl_bench.components import register
from cl_bench.data.image_decode import open_image
from cl_bench.data.safe_paths import list_files
from cl_bench.data.splits import split_meta
from cl_bench.data.image.types import ImageClassificationData, ImageSplit
from cl_bench.errors import ClBenchError
from cl_bench.specs import validate_params

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderParams(BaseModel):
    """``root`` is relative to the data root; ``train_dir``/``test_dir`` are inside it."""

    model_config = ConfigDict(extra="forbid")

    root: str
    train_dir: str = "train"
    test_dir: str = "val"
    resize: int = Field(default=256, ge=1)
    crop: int = Field(default=224, ge=1)
    channels: Literal[1, 3] = 3
    # original: the train split hands over the decoded image uncropped (any size), for protocols
    # that crop it themselves (linear_sgd's RandomResizedCrop, as MoCo's main_lincls)
    train_view: Literal["center_crop", "original"] = "center_crop"

    @model_validator(mode="after")
    def _crop_fits(self) -> ImageFolderParams:
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) must not exceed resize ({self.resize})")
        return self


class LazyImageFolderSplit(ImageSplit):
    """One split of an image folder; each ``__getitem__`` opens, converts, resizes and crops a file."""

    def __init__(
        self, root: Path, rel_paths: list[str], labels: np.ndarray, resize: int | None, crop: int | None, channels: int
    ) -> None:
        """``resize``/``crop`` None: the image as decoded (its own size)."""
        self.root = root
        self.rel_paths = rel_paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self.resize, self.crop, self.channels = resize, crop, channels
        h = hashlib.sha256(f"imagefolder resize={resize} crop={crop} channels={channels}\0".encode())
        for rel, label in zip(rel_paths, self.labels):
            h.update(f"{rel}\0{(root / rel).stat().st_size}\0{int(label)}\n".encode())
        self.fingerprint = h.hexdigest()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.root / self.rel_paths[index]
        with open_image(path) as img:
            img = img.convert("RGB" if self.channels == 3 else "L")
        if self.resize is not None:
            img = TF.resize(img, self.resize, interpolation=TF.InterpolationMode.BILINEAR)
        if self.crop is not None:
            img = TF.center_crop(img, [self.crop, self.crop])
        return TF.pil_to_tensor(img).float().div_(255.0), int(self.labels[index])


def _list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, symlinked folders followed once; a loop, a
    dangling link or a FIFO among the images is an error), in ``os.walk`` order."""
    return list_files(folder, IMAGE_EXTENSIONS)


def scan_split(split_dir: Path, layout: str) -> tuple[list[str], list[str], np.ndarray]:
    """(class names, image paths relative to ``split_dir``, labels) of one split folder."""
    if not split_dir.is_dir():
        raise ClBenchError(f"image folder split {split_dir} does not exist: {layout}")
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ClBenchError(f"{split_dir} has no class folders: {layout}")
    rel_paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = _list_images(split_dir / name)
        if not files:
            raise ClBenchError(
                f"class folder {split_dir / name} has no images ({', '.join(IMAGE_EXTENSIONS)}): {layout}"
            )
        rel_paths.extend(f.relative_to(split_dir).as_posix() for f in files)
        labels.extend([label] * len(files))
    return classes, rel_paths, np.asarray(labels, dtype=np.int64)


@register("dataset", "imagefolder")
def load(params: dict[str, Any] | None, data_root: Path | None) -> ImageClassificationData:
    """Both splits of the tree; nothing is decoded until an item is read."""
    p = validate_params(ImageFolderParams, params, "dataset 'imagefolder' params")
    layout = f"expected DATA_ROOT/{p.root}/{{{p.train_dir},{p.test_dir}}}/<class>/<image>; pass --data-root"
    if data_root is None:
        raise ClBenchError(f"dataset 'imagefolder' needs a data root: {layout} (or set CLBENCH_DATA)")
    base = Path(data_root) / p.root
    if not base.is_dir():
        raise ClBenchError(f"image folder {base} does not exist: {layout}")
    train_dir, test_dir = base / p.train_dir, base / p.test_dir
    classes, train_paths, train_labels = scan_split(train_dir, layout)
    test_classes, test_paths, test_labels = scan_split(test_dir, layout)
    if classes != test_classes:
        only_train = sorted(set(classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(classes))
        raise ClBenchError(
            f"class folders differ between {train_dir} and {test_dir}: "
            f"only in {p.train_dir}: {only_train[:5]}, only in {p.test_dir}: {only_test[:5]}; "
            "both splits need the same class folders"
        )
    original = p.train_view == "original"
    train = LazyImageFolderSplit(
        train_dir, train_paths, train_labels, None if original else p.resize, None if original else p.crop, p.channels
    )
    test = LazyImageFolderSplit(test_dir, test_paths, test_labels, p.resize, p.crop, p.channels)
    return ImageClassificationData(
        name=f"imagefolder:{p.root}",
        train=train,
        test=test,
        class_names=classes,
        in_channels=p.channels,
        image_size=(p.crop, p.crop),
        meta={
            "folder": str(base),
            "resize": p.resize,
            "crop": p.crop,
            **split_meta(train_labels, test_labels, len(classes)),
        },
    )
