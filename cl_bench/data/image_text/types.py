"""In-memory views of image–text data: captioned images, MMEB-style query/candidate sets,
MMVP-style image pairs. Shared by the image–text loaders, trainers and protocols.

Images are always handed over as float tensors [N, 3, H, W] in [0, 1] (an adapter applies its
own normalisation and resizing), texts as lists of str.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cl_bench.data.text.types import TextSplit, fingerprint_texts
from cl_bench.data.image.types import fingerprint_arrays


def _uint8_to_float(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.float().div_(255.0) if a.dtype == np.uint8 else t.float()


class ImageList:
    """An ordered set of images (what an image tower embeds), with a content fingerprint.

    ``images``: uint8 [N, H, W, 3] or [N, 3, H, W] (0..255), or float [N, 3, H, W] in [0, 1]; or
    a list of single images ([H, W, 3] / [3, H, W]) that may differ in size (a real benchmark's
    images handed to the model's own preprocessing): stacked when they share one size, else kept
    as a list, and :meth:`shape_groups` groups a range of them by size for embedding.
    ``lazy`` lists decode files on demand: ``item(i)`` gives image i as uint8 [3, H, W].
    """

    lazy = False

    def __init__(self, images: np.ndarray | list[np.ndarray]) -> None:
        self.variable = False
        if isinstance(images, list):
            chw = [np.ascontiguousarray(a.transpose(2, 0, 1)) if a.shape[-1] == 3 and a.shape[0] != 3 else a
                   for a in images]
            if any(a.ndim != 3 for a in chw):
                raise ValueError("each image of a list must be 3-d ([H, W, 3] or [3, H, W])")
            if len({a.shape for a in chw}) > 1:
                self.variable = True
                self.images: Any = chw
                self.fingerprint = fingerprint_arrays(*chw, extra="cl_bench.images.v1:variable")
                return
            images = np.stack(chw) if chw else np.zeros((0, 3, 1, 1), np.uint8)
        if images.ndim != 4:
            raise ValueError(f"images must be 4-d, got shape {images.shape}")
        if images.shape[-1] == 3 and images.shape[1] != 3:
            images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        self.images = images
        self.fingerprint = fingerprint_arrays(images, extra="cl_bench.images.v1")

    def __len__(self) -> int:
        return len(self.images)

    def tensor(self, index: Any = slice(None)) -> torch.Tensor:
        """Images (all, or ``index``) as float32 [n, 3, H, W] in [0, 1] (they must share a size)."""
        if self.variable:
            picked = self.images[index] if isinstance(index, slice) else [self.images[i] for i in np.atleast_1d(index)]
            if len({a.shape for a in picked}) > 1:
                raise ValueError("these images differ in size: use same_size_batches()")
            return _uint8_to_float(np.stack(picked)) if picked else torch.zeros(0, 3, 1, 1)
        return _uint8_to_float(self.images[index])

    def shape_groups(self, start: int, stop: int) -> list[tuple[np.ndarray, torch.Tensor]]:
        """Images ``start..stop-1`` as (positions within the range, float32 [n, 3, H, W]) groups of one
        size each: one group unless the list's sizes vary (then in order of first appearance)."""
        if not self.variable:
            return [(np.arange(stop - start), self.tensor(slice(start, stop)))]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i in range(start, stop):
            by_shape.setdefault(self.images[i].shape, []).append(i)
        return [(np.asarray(idx) - start, _uint8_to_float(np.stack([self.images[i] for i in idx])))
                for idx in by_shape.values()]

class CaptionedImages:
    """One split of captioned images.

    ``captions[i]``: the short captions of image i (>= 1; COCO/Flickr have 5).
    ``long_captions[i]``: an optional multi-sentence description of image i (DreamLIP).
    ``labels[i]``: an optional class index (zero-shot classification).
    ``hard_negatives[i]``: optional captions that are wrong for image i in one attribute/relation.
    ``hard_negative_positives[i][k]``: optional, the true caption that ``hard_negatives[i][k]`` swaps
    one attribute of (NegCLIP pairs each negative with its own positive). Not in the fingerprint: it
    is a function of the generator that made the negatives, whose texts are.
    ``twin_of[i]``: optional, the index of image i's counterfactual twin (the same scene with one
    visual pattern changed, each captioned with the statement true for it and false for the other),
    or -1; the image–text trainer keeps twins in one batch. Symmetric; in the fingerprint.
    """

    def __init__(
        self,
        images: ImageList,
        captions: list[list[str]],
        *,
        long_captions: list[str] | None = None,
        labels: np.ndarray | None = None,
        hard_negatives: list[list[str]] | None = None,
        hard_negative_positives: list[list[str]] | None = None,
        twin_of: np.ndarray | None = None,
    ) -> None:
        n = len(images)
        if len(captions) != n or any(len(c) == 0 for c in captions):
            raise ValueError(f"need >= 1 caption for each of the {n} images")
        for name, seq in (("long_captions", long_captions), ("labels", labels), ("hard_negatives", hard_negatives)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"{name}: {len(seq)} entries for {n} images")
        self.images = images
        self.captions = [list(c) for c in captions]
        self.long_captions = None if long_captions is None else list(long_captions)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.hard_negatives = None if hard_negatives is None else [list(h) for h in hard_negatives]
        if hard_negative_positives is not None and (
                hard_negatives is None
                or [len(h) for h in hard_negative_positives] != [len(h) for h in hard_negatives]):
            raise ValueError("hard_negative_positives must give one positive per hard negative")
        self.hard_negative_positives = (None if hard_negative_positives is None
                                        else [list(h) for h in hard_negative_positives])
        self.twin_of = None if twin_of is None else _check_twins(np.asarray(twin_of, dtype=np.int64), n)
        flat = [t for c in self.captions for t in c] + [str(len(c)) for c in self.captions]
        flat += self.long_captions or []
        flat += [t for h in (self.hard_negatives or []) for t in h]
        extra = "" if self.labels is None else hashlib.sha256(self.labels.tobytes()).hexdigest()
        if self.twin_of is not None:
            extra += "twins:" + hashlib.sha256(self.twin_of.tobytes()).hexdigest()
        self.fingerprint = hashlib.sha256(
            (images.fingerprint + fingerprint_texts(flat, extra)).encode()
        ).hexdigest()

    def __len__(self) -> int:
        return len(self.images)

    def caption_texts(self) -> tuple[TextSplit, np.ndarray]:
        """All short captions flattened (a TextSplit) and the image index of each."""
        texts = [t for c in self.captions for t in c]
        owner = np.repeat(np.arange(len(self.captions)), [len(c) for c in self.captions])
        return TextSplit(texts), owner


def _check_twins(twin_of: np.ndarray, n: int) -> np.ndarray:
    if twin_of.shape != (n,):
        raise ValueError(f"twin_of: {twin_of.shape} entries for {n} images")
    paired = np.flatnonzero(twin_of >= 0)
    if (twin_of < -1).any() or (twin_of >= n).any() or (twin_of[paired] == paired).any() \
            or (twin_of[twin_of[paired]] != paired).any():
        raise ValueError("twin_of must pair images symmetrically (i <-> j, i != j) or hold -1")
    return twin_of


@dataclass
class CaptionedImageData:
    """A captioned-image dataset: a train split (for methods trained fresh) and a test split.

    ``class_names`` and ``templates`` (prompts with ``{}`` for the class name) serve zero-shot
    classification; ``arch_inputs`` tells arch builders the image size and channels.
    """

    name: str
    train: CaptionedImages | None
    test: CaptionedImages
    class_names: list[str] | None = None
    templates: list[str] | None = None
    arch_inputs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names or [])

    @property
    def fingerprint(self) -> str:
        parts = [self.name, self.test.fingerprint, self.train.fingerprint if self.train else "-"]
        parts += self.class_names or []
        parts += self.templates or []
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()
