"""Real image–text evaluation data under ``--data-root`` (``CLBENCH_DATA``), official layouts.

- ``coco-captions``: ``DATA_ROOT/coco/dataset_coco.json`` (Karpathy's split file: ``images[]``
  with ``filepath``, ``filename``, ``split`` in train/restval/val/test, ``sentences[].raw``)
  and the images at ``DATA_ROOT/coco/<filepath>/<filename>`` (``val2014/``, ``train2014/``).
  Test split = Karpathy ``test``: 5,000 images, every caption kept (25,010).
- ``flickr30k-captions``: ``DATA_ROOT/flickr30k/dataset_flickr30k.json`` and the images at
  ``DATA_ROOT/flickr30k/flickr30k-images/<filename>``. Test split = Karpathy ``test`` (1,000).
- ``imagenet-zeroshot``: an ImageFolder-style tree ``DATA_ROOT/imagenet/val/<wnid>/<image>``
  (class index = the sorted folder order, as torchvision's ImageFolder) and
  ``DATA_ROOT/imagenet/classnames.txt``: one human-readable class name per line, in that
  class-index order. Prompt templates come from the task (zero_shot's ``templates``).

All three are evaluation-only (``train`` is None). Images are decoded lazily (PIL), converted
to RGB, the shorter side resized to ``image_size`` (bicubic, as CLIP) and center-cropped to
``image_size`` × ``image_size``; each model then applies its own normalisation. Fingerprints
hash the preprocessing, every image's relative path and file size, and the texts — not the
pixel contents (hashing COCO or ImageNet would take minutes).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from pydantic import BaseModel, ConfigDict, Field

from cl_bench.bounded_io import MAX_DATA_TEXT_BYTES, read_json, read_text
from cl_bench.components import register
from cl_bench.data.data_root import need_root
from cl_bench.data.image_decode import open_image
from cl_bench.data.image_text.types import CaptionedImageData, CaptionedImages, ImageList
from cl_bench.data.image.imagefolder import IMAGE_EXTENSIONS
from cl_bench.data.safe_paths import SafeRelPath, check_data_file
from cl_bench.errors import ClBenchError
from cl_bench.specs import validate_params

KARPATHY_SPLITS = ("train", "restval", "val", "test")


class FileImageList(ImageList):
    """An :class:`ImageList` read from files on demand (``tensor(index)`` decodes those files)."""

    lazy = True

    def __init__(self, root: Path, rel_paths: list[str], image_size: int) -> None:
        self.root = Path(root)
        self.rel_paths = list(rel_paths)
        self.image_size = int(image_size)
        h = hashlib.sha256(f"cl_bench.file-images.v1 size={image_size} resize=bicubic crop=center\0".encode())
        for rel in self.rel_paths:
            path = self.root / rel
            try:
                size = path.stat().st_size
            except OSError:
                raise ClBenchError(f"image {path} is missing; check the image folder under --data-root") from None
            h.update(f"{rel}\0{size}\n".encode())
        self.fingerprint = h.hexdigest()

    def __len__(self) -> int:
        return len(self.rel_paths)

    def _load(self, rel: str) -> torch.Tensor:
        path = self.root / rel
        with open_image(path) as img:
            img = img.convert("RGB")
        img = TF.resize(img, self.image_size, interpolation=TF.InterpolationMode.BICUBIC)
        img = TF.center_crop(img, [self.image_size, self.image_size])
        return TF.pil_to_tensor(img)

    def item(self, index: int) -> torch.Tensor:
        """Image ``index`` as uint8 [3, S, S] (what a loader worker decodes)."""
        return self._load(self.rel_paths[index])

    def tensor(self, index: Any = slice(None)) -> torch.Tensor:
        picked = self.rel_paths[index] if isinstance(index, slice) else (
            [self.rel_paths[int(index)]] if np.ndim(index) == 0 else [self.rel_paths[int(i)] for i in index])
        if not picked:
            return torch.zeros(0, 3, self.image_size, self.image_size)
        return torch.stack([self._load(r) for r in picked]).float().div_(255.0)

    @property
    def images(self) -> np.ndarray:  # type: ignore[override]
        """Every image as uint8 [N, 3, S, S] (decodes them all: avoid on large sets)."""
        return (self.tensor() * 255.0).round().to(torch.uint8).numpy()


def _need(path: Path, what: str, layout: str) -> Path:
    if not path.exists():
        raise ClBenchError(f"{what} {path} is missing; {layout}")
    return path


class KarpathyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str
    split_json: str
    image_dir: str | None = None  # None: each entry's own ``filepath`` (COCO)
    split: str = "test"
    train_splits: list[str] = Field(default_factory=list)  # e.g. [train, restval]: a train split too (noisy-captions)
    train_captions: int | None = Field(default=None, ge=1, le=100)  # keep the first N per train image (precomp: 5)
    image_size: int = Field(default=224, ge=8, le=1024)


class KarpathySentence(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    raw: str


class KarpathyImage(BaseModel):
    """One ``images[]`` entry: strict types, file names that stay inside the image folder."""

    model_config = ConfigDict(strict=True, extra="ignore")
    split: str
    filename: SafeRelPath
    filepath: SafeRelPath | None = None
    sentences: list[KarpathySentence]


class KarpathyFile(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    images: list[KarpathyImage]


def load_karpathy(name: str, p: KarpathyParams, data_root: Path | None) -> CaptionedImageData:
    """Images of one Karpathy split with all their raw captions."""
    where = f"{p.image_dir}/<filename>" if p.image_dir else "<filepath>/<filename>"
    layout = f"expected DATA_ROOT/{p.root}/{p.split_json} (Karpathy split JSON) and DATA_ROOT/{p.root}/{where}"
    if p.split not in KARPATHY_SPLITS:
        raise ClBenchError(f"dataset '{name}': split must be one of {', '.join(KARPATHY_SPLITS)}, got {p.split!r}")
    root = _need(need_root(data_root, name, layout) / p.root, "folder", layout)
    js = _need(root / p.split_json, "split file", layout)
    doc = read_json(js, MAX_DATA_TEXT_BYTES, "Karpathy split JSON")
    entries = validate_params(KarpathyFile, doc if isinstance(doc, dict) else {}, f"{js} ({layout})").images
    for wanted in (p.split, *p.train_splits):
        if wanted not in KARPATHY_SPLITS:
            raise ClBenchError(f"dataset '{name}': splits must be among {', '.join(KARPATHY_SPLITS)}, got {wanted!r}")
    groups: dict[str, tuple[list[str], list[list[str]]]] = {p.split: ([], []), "*train": ([], [])}
    for k, e in enumerate(entries):
        if e.split != p.split and e.split not in p.train_splits:
            continue
        if not p.image_dir and e.filepath is None:
            raise ClBenchError(f"{js}: images[{k}] has no filepath (needed without image_dir); {layout}")
        folder = p.image_dir if p.image_dir else e.filepath
        rel, caps = f"{folder}/{e.filename}", [s.raw.strip() for s in e.sentences]
        if not caps:
            raise ClBenchError(f"{js}: images[{k}] ({rel}) has no sentences")
        group = groups[p.split if e.split == p.split else "*train"]
        group[0].append(rel)
        group[1].append(caps)
    rel_paths, captions = groups[p.split]
    if not rel_paths:
        raise ClBenchError(f"{js}: no image has split '{p.split}'")
    test = CaptionedImages(FileImageList(root, rel_paths, p.image_size), captions)
    train = None
    if p.train_splits:  # the train images in the file's order (a noise index counts captions in it)
        train_paths, train_caps = groups["*train"]
        if not train_paths:
            raise ClBenchError(f"{js}: no image has split {' or '.join(p.train_splits)}")
        if p.train_captions is not None:
            train_caps = [c[: p.train_captions] for c in train_caps]
        train = CaptionedImages(FileImageList(root, train_paths, p.image_size), train_caps)
    return CaptionedImageData(
        name=name, train=train, test=test,
        arch_inputs={"in_channels": 3, "image_size": (p.image_size, p.image_size)},
        meta={"root": str(root), "split_json": p.split_json, "split": p.split, "n_images": len(rel_paths),
              "n_captions": sum(len(c) for c in captions)},
    )


@register("dataset", "coco-captions")
def load_coco_captions(params: dict[str, Any] | None, data_root: Path | None) -> CaptionedImageData:
    """MS-COCO captions, Karpathy split (test: 5k images, 5+ captions each)."""
    p = validate_params(KarpathyParams, {"root": "coco", "split_json": "dataset_coco.json", **(params or {})},
                        "dataset 'coco-captions' params")
    return load_karpathy("coco-captions", p, data_root)


@register("dataset", "flickr30k-captions")
def load_flickr30k_captions(params: dict[str, Any] | None, data_root: Path | None) -> CaptionedImageData:
    """Flickr30k captions, Karpathy split (test: 1k images, 5 captions each)."""
    defaults = {"root": "flickr30k", "split_json": "dataset_flickr30k.json", "image_dir": "flickr30k-images"}
    p = validate_params(KarpathyParams, {**defaults, **(params or {})}, "dataset 'flickr30k-captions' params")
    return load_karpathy("flickr30k-captions", p, data_root)


class ZeroShotFolderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = "imagenet"
    split_dir: str = "val"
    class_names_file: str = "classnames.txt"
    image_size: int = Field(default=224, ge=8, le=1024)


@register("dataset", "imagenet-zeroshot")
def load_imagenet_zeroshot(params: dict[str, Any] | None, data_root: Path | None) -> CaptionedImageData:
    """An ImageFolder val tree + a class-names file, for zero-shot classification."""
    p = validate_params(ZeroShotFolderParams, params, "dataset 'imagenet-zeroshot' params")
    layout = (f"expected DATA_ROOT/{p.root}/{p.split_dir}/<class folder>/<image> and "
              f"DATA_ROOT/{p.root}/{p.class_names_file} (one class name per line, in sorted-folder order)")
    root = _need(need_root(data_root, "imagenet-zeroshot", layout) / p.root, "folder", layout)
    split = _need(root / p.split_dir, "folder", layout)
    names_file = _need(root / p.class_names_file, "class-names file", layout)
    folders = sorted(d.name for d in split.iterdir() if d.is_dir())
    if not folders:
        raise ClBenchError(f"{split} has no class folders; {layout}")
    text = read_text(names_file, MAX_DATA_TEXT_BYTES, "class-names file")
    names = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(names) != len(folders):
        raise ClBenchError(f"{names_file} has {len(names)} class names but {split} has {len(folders)} class "
                           "folders; they must match one to one (sorted folder order)")
    rel_paths: list[str] = []
    labels: list[int] = []
    for c, folder in enumerate(folders):
        files = sorted(f.name for f in (split / folder).iterdir()  # a dangling link or FIFO is an error
                       if f.suffix.lower() in IMAGE_EXTENSIONS and not f.is_dir() and check_data_file(f, "image"))
        rel_paths += [f"{p.split_dir}/{folder}/{f}" for f in files]
        labels += [c] * len(files)
    if not rel_paths:
        raise ClBenchError(f"{split} has no images ({', '.join(IMAGE_EXTENSIONS)}); {layout}")
    images = FileImageList(root, rel_paths, p.image_size)
    test = CaptionedImages(images, [[names[c]] for c in labels], labels=np.asarray(labels))
    return CaptionedImageData(
        name="imagenet-zeroshot", train=None, test=test, class_names=names, templates=None,
        arch_inputs={"in_channels": 3, "image_size": (p.image_size, p.image_size)},
        meta={"root": str(root), "split_dir": p.split_dir, "folders": len(folders), "n_images": len(rel_paths)},
    )
