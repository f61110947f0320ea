"""In-memory views of dense-prediction datasets (detection, semantic segmentation).

Conventions (shared by every loader, the protocols and the metrics):

- An image is a float32 tensor [3, H, W] in [0, 1] (RGB).
- Boxes are float32 [K, 4] ``(x0, y0, x1, y1)`` in pixels, 0-based, detectron2's convention:
  a VOC box ``xmin..xmax`` (1-based, inclusive) loads as ``(xmin - 1, ymin - 1, xmax, ymax)``
  and a COCO box ``[x, y, w, h]`` as ``(x, y, x + w, y + h)``; so a box covering pixel
  columns ``c0..c1`` (0-based, inclusive) is ``(c0, ., c1 + 1, .)`` in both formats.
- ``labels`` are contiguous 0-based class indices into ``class_names``.
- ``difficult`` objects (VOC) are kept for training and ignored by the VOC evaluator;
  ``iscrowd`` regions (COCO) are ignored by COCOeval and should not be trained as instances.
- Segmentation label maps are uint8 [H, W] of train ids ``0..C-1``; ``IGNORE_INDEX`` (255)
  is ignored in training and evaluation.

Every split is also an :class:`~cl_bench.data.image.types.ImageSplit` (``split[i] -> (image,
image-level label)``), so the image-level trainers (SimCLR, DCL, supervised, PixPro) can
train on a dense dataset's train split unchanged. The image-level label is documented by
each split (detection: the class of the largest object; segmentation: the thing class with
the most pixels).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cl_bench.bounded_io import read_bytes
from cl_bench.data.image.types import ImageSplit
from cl_bench.errors import ClBenchError

IGNORE_INDEX = 255
MAX_IMAGE_SIDE = 100_000  # pixels (a record's height / width)
HASH_BYTES_LIMIT = 256 * 2**20  # hash image bytes when a split's files total at most this


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file as uint8 [H, W, 3]; unreadable file -> ClBenchError."""
    from cl_bench.data.image_decode import open_image

    with open_image(Path(path)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255.0)


def files_fingerprint(paths: Sequence[Path], extra: str) -> tuple[str, str]:
    """(sha256, mode): over file bytes if they total <= HASH_BYTES_LIMIT, else over names + sizes."""
    sizes = [p.stat().st_size for p in paths]
    h = hashlib.sha256(extra.encode())
    mode = "bytes" if sum(sizes) <= HASH_BYTES_LIMIT else "names+sizes"
    for p, s in zip(paths, sizes):
        h.update(p.name.encode() + b"\0" + str(s).encode() + b"\0")
        if mode == "bytes":
            h.update(read_bytes(p, HASH_BYTES_LIMIT, "image"))
    return h.hexdigest(), mode


@dataclass
class DetectionRecord:
    """One image's ground truth. ``masks``: per-object COCO segmentation (polygons or RLE) or None."""

    image_id: int | str
    file_name: Path
    height: int
    width: int
    boxes: np.ndarray  # float32 [K, 4] xyxy, 0-based pixels (see module docstring)
    labels: np.ndarray  # int64 [K], contiguous class index
    difficult: np.ndarray  # bool [K] (VOC); all False for COCO
    iscrowd: np.ndarray  # bool [K] (COCO); all False for VOC
    truncated: np.ndarray | None = None  # bool [K] (VOC) when present
    masks: list[Any] | None = None  # COCO ``segmentation`` entries, decode with ``instance_masks``

    def __post_init__(self) -> None:
        """Every reader's records are checked here: sizes in range, boxes finite, not inverted and
        not absurdly far outside the image (an ``Infinity`` box once segfaulted RoIAlign)."""
        where = f"{self.file_name} (image {self.image_id})"
        if not (1 <= self.height <= MAX_IMAGE_SIDE and 1 <= self.width <= MAX_IMAGE_SIDE):
            raise ClBenchError(f"{where}: image size {self.width} x {self.height} is outside 1..{MAX_IMAGE_SIDE}")
        b = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if len(b) != len(self.labels):
            raise ClBenchError(f"{where}: {len(b)} boxes but {len(self.labels)} labels")
        if len(b):
            bad = ~np.isfinite(b).all(axis=1) | (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
            bad |= (b[:, [0, 2]] < -self.width).any(axis=1) | (b[:, [0, 2]] > 2 * self.width).any(axis=1)
            bad |= (b[:, [1, 3]] < -self.height).any(axis=1) | (b[:, [1, 3]] > 2 * self.height).any(axis=1)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise ClBenchError(
                    f"{where}: box #{k + 1} (x0, y0, x1, y1) = {b[k].tolist()} is not finite, is inverted or lies far "
                    f"outside the {self.width} x {self.height} image; fix the annotation")

    def annotation_json(self) -> dict[str, Any]:
        """The annotation part as JSON (for fingerprints and debugging); pixels excluded."""
        return {
            "image_id": self.image_id, "file": self.file_name.name, "h": self.height, "w": self.width,
            "boxes": np.round(self.boxes.astype(np.float64), 4).tolist(), "labels": self.labels.tolist(),
            "difficult": self.difficult.astype(int).tolist(), "iscrowd": self.iscrowd.astype(int).tolist(),
            "masks": self.masks,
        }

    def instance_masks(self) -> np.ndarray:
        """uint8 [K, H, W] binary masks decoded with pycocotools (needs ``masks``)."""
        if self.masks is None:
            raise ClBenchError(f"image {self.image_id} has no instance masks (a VOC-style dataset?)")
        from pycocotools import mask as mask_utils

        out = np.zeros((len(self.masks), self.height, self.width), dtype=np.uint8)
        for k, seg in enumerate(self.masks):
            if isinstance(seg, list):  # polygons
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, self.height, self.width))
            elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(seg, self.height, self.width)
            else:
                rle = seg
            with warnings.catch_warnings():  # pycocotools' own numpy-2 copy= DeprecationWarning
                warnings.simplefilter("ignore", DeprecationWarning)
                out[k] = mask_utils.decode(rle)
        return out


class _ImageFiles(ImageSplit):
    """Shared behaviour: images decoded from files, optionally kept in memory once decoded."""

    file_names: list[Path]
    cache_images: bool
    _cache: dict[int, np.ndarray]
    _labels: np.ndarray | None

    def rgb(self, index: int) -> np.ndarray:
        """uint8 [H, W, 3]."""
        if self.cache_images and index in self._cache:
            return self._cache[index]
        arr = read_rgb(self.file_names[index])
        if self.cache_images:
            self._cache[index] = arr
        return arr

    def image(self, index: int) -> torch.Tensor:
        """float32 [3, H, W] in [0, 1]."""
        return to_tensor(self.rgb(index))

    def __len__(self) -> int:
        return len(self.file_names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.image(index), int(self.labels[index])

    @property
    def labels(self) -> np.ndarray:  # type: ignore[override]
        if self._labels is None:
            self._labels = np.asarray([self.image_label(i) for i in range(len(self))], dtype=np.int64)
        return self._labels

    def image_label(self, index: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def tensor(self) -> torch.Tensor:
        """All images as one float32 tensor [N, 3, H, W]; only when every image has the same size."""
        arrays = [self.rgb(i) for i in range(len(self))]
        if len({a.shape for a in arrays}) > 1:
            raise ClBenchError(
                "the images of this split differ in size; image-level training/features need a resize "
                "(use a dense protocol, or an embedded scenes dataset whose images share one size)"
            )
        if not arrays:
            raise ClBenchError("the dataset split is empty: nothing to train or evaluate")
        return torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy()).float().div_(255.0)


class DetectionSplit(_ImageFiles):
    """Images + per-image :class:`DetectionRecord`. ``split[i] -> (image, class of largest object)``.

    ``gt_json``: the COCO-format ground-truth file that COCOeval reads for this split (COCO
    datasets; for other formats :func:`cl_bench.metrics.coco_eval.records_to_coco` builds one).
    """

    def __init__(
        self,
        records: list[DetectionRecord],
        *,
        cache_images: bool = False,
        gt_json: Path | None = None,
        tag: str = "",
    ) -> None:
        if not records:
            raise ClBenchError("the detection split is empty (no images listed); check the image set / JSON")
        self.records = records
        self.file_names = [r.file_name for r in records]
        self.cache_images = cache_images
        self.gt_json = gt_json
        self._cache = {}
        self._labels = None
        ann = json.dumps([r.annotation_json() for r in records], sort_keys=True, default=str)
        self.fingerprint, self.fingerprint_mode = files_fingerprint(self.file_names, tag + ann)

    def target(self, index: int) -> DetectionRecord:
        return self.records[index]

    @cached_property
    def images_fingerprint(self) -> str:
        """The images alone, in order (bytes, not names, not annotations): what a label-free trainer sees.

        Two annotation formats of one image set (the VOC and COCO scenes twins) share it, so a
        self-supervised checkpoint trained on one is reused for the other. Splits too large to
        hash byte by byte keep their full fingerprint (never shared).
        """
        if sum(p.stat().st_size for p in self.file_names) > HASH_BYTES_LIMIT:
            return self.fingerprint
        h = hashlib.sha256(b"images-v1")
        for path in self.file_names:
            data = path.read_bytes()
            h.update(str(len(data)).encode() + b"\0" + data)
        return h.hexdigest()

    def image_label(self, index: int) -> int:
        r = self.records[index]
        if len(r.labels) == 0:
            return 0
        area = (r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1])
        return int(r.labels[int(np.argmax(area))])


class SegmentationSplit(_ImageFiles):
    """Images + label maps of train ids (uint8, 255 = ignore).

    ``label_reader(path) -> uint8 [H, W]`` maps a label file to train ids (e.g. Cityscapes
    labelIds -> trainIds) and checks it; ``split[i] -> (image, thing class with most pixels)``.
    """

    def __init__(
        self,
        file_names: list[Path],
        label_files: list[Path],
        label_reader: Callable[[Path], np.ndarray],
        num_classes: int,
        *,
        thing_classes: Sequence[int] = (),
        cache_images: bool = False,
        tag: str = "",
    ) -> None:
        if not file_names:
            raise ClBenchError("the segmentation split is empty (no images found); check the layout")
        if len(file_names) != len(label_files):
            raise ValueError("one label file per image")
        self.file_names = list(file_names)
        self.label_files = list(label_files)
        self.label_reader = label_reader
        self.num_classes = num_classes
        self.thing_classes = tuple(thing_classes)
        self.cache_images = cache_images
        self._cache = {}
        self._label_cache: dict[int, np.ndarray] = {}
        self._labels = None
        self.fingerprint, self.fingerprint_mode = files_fingerprint(
            [p for pair in zip(self.file_names, self.label_files) for p in pair], tag
        )

    def label_map(self, index: int) -> np.ndarray:
        """uint8 [H, W] train ids, 255 = ignore; checked against the image's size."""
        if self.cache_images and index in self._label_cache:
            return self._label_cache[index]
        lab = self.label_reader(self.label_files[index])
        h, w = self.rgb(index).shape[:2]
        if lab.shape != (h, w):
            raise ClBenchError(
                f"label map {self.label_files[index]} is {lab.shape[1]}x{lab.shape[0]} but its image "
                f"{self.file_names[index].name} is {w}x{h}; they must match pixel for pixel"
            )
        if self.cache_images:
            self._label_cache[index] = lab
        return lab

    def image_label(self, index: int) -> int:
        counts = np.bincount(self.label_map(index).ravel(), minlength=256)[: self.num_classes]
        things = [c for c in self.thing_classes if counts[c] > 0]
        if things:
            return int(max(things, key=lambda c: (counts[c], -c)))
        return int(np.argmax(counts)) if counts.sum() > 0 else 0


def _data_fingerprint(name: str, *parts: str) -> str:
    h = hashlib.sha256()
    for part in (name, *parts):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


class _RGBClasses:
    """What the arch builders and protocols read off a dense dataset: RGB input, its class count."""

    class_names: list[str]
    image_size: tuple[int, int]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        return 3

    @property
    def arch_inputs(self) -> dict[str, Any]:
        return {"in_channels": 3, "image_size": tuple(self.image_size)}


@dataclass
class DetectionData(_RGBClasses):
    """A detection dataset with a train and a test split.

    ``metric``: how the test split is scored — ``"voc"`` (PascalVOCDetectionEvaluator:
    AP/AP50/AP75, ``use_07_metric`` for VOC2007 test) or ``"coco"`` (COCOeval bbox, and segm
    when ``has_masks``). ``category_ids[i]``: the COCO category id of class ``i`` (COCO
    results files use it); for VOC it is ``i + 1``.
    """

    name: str
    train: DetectionSplit
    test: DetectionSplit
    class_names: list[str]
    metric: str  # "voc" | "coco"
    use_07_metric: bool = False
    has_masks: bool = False
    category_ids: list[int] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)  # nominal (H, W) for arch builders
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.category_ids:
            self.category_ids = list(range(1, len(self.class_names) + 1))

    @property
    def fingerprint(self) -> str:
        return _data_fingerprint(
            self.name, self.train.fingerprint, self.test.fingerprint, self.metric,
            str(self.use_07_metric), *self.class_names, *map(str, self.category_ids),
        )


@dataclass
class SegmentationData(_RGBClasses):
    """A semantic-segmentation dataset: train ids ``0..num_classes-1``, ``ignore_index`` ignored."""

    name: str
    train: SegmentationSplit
    test: SegmentationSplit
    class_names: list[str]
    ignore_index: int = IGNORE_INDEX
    image_size: tuple[int, int] = (0, 0)  # nominal (H, W) for arch builders
    meta: dict[str, Any] = field(default_factory=dict)
    # the words a text tower is prompted with per class (language-guided heads); None: class_names
    prompt_names: list[str] | None = None

    @property
    def fingerprint(self) -> str:
        return _data_fingerprint(
            self.name, self.train.fingerprint, self.test.fingerprint, str(self.ignore_index), *self.class_names
        )
