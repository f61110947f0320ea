"""Item subsets of a split, for reduced budgets (``--smoke`` / ``--limit``; see :mod:`cl_bench.budget`).

``take(split, indices)`` returns a split of the same kind holding only the items at ``indices``
(in that order), with a fingerprint of its own: a subset's cached features are never served for
the whole split, nor the other way round. One function per kind of split, registered with
:func:`functools.singledispatch`; a kind nobody registered is a ClBenchError naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from functools import singledispatch
from typing import Any

import numpy as np
import torch

from cl_bench.data.image_text.caption_loaders import FileImageList
from cl_bench.data.dense.types import DetectionSplit, SegmentationSplit
from cl_bench.data.icl.dfa import DFASplit
from cl_bench.data.image.digits_salient import SalientSplit
from cl_bench.data.icl.fewshot_text import FewShotSplit
from cl_bench.data.image_text.types import CaptionedImages, ImageList
from cl_bench.data.icl.linreg import LinRegSplit
from cl_bench.data.image_text.mmeb import MMEBDataset
from cl_bench.data.image_text.mmvp import MMVPData
from cl_bench.data.text.types import TextSplit
from cl_bench.data.image.types import ArrayImageSplit, ImageSplit
from cl_bench.errors import ClBenchError


def subset_fingerprint(parent: str, indices: np.ndarray) -> str:
    """A subset's fingerprint: its parent's and the chosen indices."""
    h = hashlib.sha256(b"cl_bench.subset.v1\0" + parent.encode() + b"\0")
    h.update(np.asarray(indices, dtype=np.int64).tobytes())
    return h.hexdigest()


@singledispatch
def take(split: Any, indices: np.ndarray) -> Any:
    raise ClBenchError(f"a {type(split).__name__} cannot be cut to a subset (--smoke / --limit)")


class IndexedImageSplit(ImageSplit):
    """Items ``indices`` of a lazily decoded image split, read through the parent."""

    def __init__(self, parent: ImageSplit, indices: np.ndarray) -> None:
        self.parent = parent
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(parent.labels)[self.indices]
        self.fingerprint = subset_fingerprint(parent.fingerprint, self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.parent[int(self.indices[index])]


@take.register
def _(split: ImageSplit, indices: np.ndarray) -> ImageSplit:
    if type(split) is ArrayImageSplit:  # subclasses carry more than images and labels: keep them whole
        return ArrayImageSplit(split.images[indices], split.labels[indices])
    return IndexedImageSplit(split, indices)


@take.register
def _(split: DetectionSplit, indices: np.ndarray) -> DetectionSplit:
    return DetectionSplit([split.records[i] for i in indices], cache_images=split.cache_images,
                          gt_json=split.gt_json, tag="subset")


@take.register
def _(split: SegmentationSplit, indices: np.ndarray) -> SegmentationSplit:
    return SegmentationSplit([split.file_names[i] for i in indices], [split.label_files[i] for i in indices],
                             split.label_reader, split.num_classes, thing_classes=split.thing_classes,
                             cache_images=split.cache_images, tag="subset")


@take.register
def _(images: ImageList, indices: np.ndarray) -> ImageList:
    return ImageList(images.images[indices])


@take.register
def _(images: FileImageList, indices: np.ndarray) -> FileImageList:
    return FileImageList(images.root, [images.rel_paths[i] for i in indices], images.image_size)


@take.register
def _(split: CaptionedImages, indices: np.ndarray) -> CaptionedImages:
    pick = [int(i) for i in indices]
    return CaptionedImages(
        take(split.images, indices), [split.captions[i] for i in pick],
        long_captions=None if split.long_captions is None else [split.long_captions[i] for i in pick],
        labels=None if split.labels is None else split.labels[indices],
        hard_negatives=None if split.hard_negatives is None else [split.hard_negatives[i] for i in pick],
        hard_negative_positives=(None if split.hard_negative_positives is None
                                 else [split.hard_negative_positives[i] for i in pick]),
        twin_of=None if split.twin_of is None else _kept_twins(split.twin_of, pick),
    )


def _kept_twins(twin_of: np.ndarray, pick: list[int]) -> np.ndarray:
    """``twin_of`` of the subset ``pick``: a twin left out leaves its partner unpaired (-1)."""
    where = {i: k for k, i in enumerate(pick)}
    return np.asarray([where.get(int(twin_of[i]), -1) if twin_of[i] >= 0 else -1 for i in pick], np.int64)


@take.register
def _(split: TextSplit, indices: np.ndarray) -> TextSplit:
    return TextSplit([split.texts[i] for i in indices], None if split.doc_ids is None else split.doc_ids[indices])


@take.register
def _(split: FewShotSplit, indices: np.ndarray) -> FewShotSplit:
    return FewShotSplit([split.examples[i] for i in indices])


@take.register
def _(split: DFASplit, indices: np.ndarray) -> DFASplit:
    return DFASplit([split.dfas[i] for i in indices], [split.sequences[i] for i in indices])


@take.register
def _(split: LinRegSplit, indices: np.ndarray) -> LinRegSplit:
    return LinRegSplit(split.xs[indices], split.ys[indices], split.ws[indices])


def replace_test(data: Any, indices: np.ndarray) -> Any:
    """``data`` (a dataclass with a ``test`` split) with its test split cut to ``indices``."""
    return dataclasses.replace(data, test=take(data.test, indices))


@take.register
def _(split: SalientSplit, indices: np.ndarray) -> SalientSplit:
    return SalientSplit(split.images[indices], split.labels[indices], split.common_labels[indices],
                        split.salient_labels[indices])


@take.register
def _(ds: MMEBDataset, indices: np.ndarray) -> MMEBDataset:
    """Rows ``indices`` of one MMEB dataset (the fingerprint names the subset)."""
    pick = [int(i) for i in indices]
    out = dataclasses.replace(
        ds, qry_text=[ds.qry_text[i] for i in pick], qry_img=[ds.qry_img[i] for i in pick],
        tgt_text=[ds.tgt_text[i] for i in pick], tgt_img=[ds.tgt_img[i] for i in pick],
        file_digest=subset_fingerprint(ds.file_digest, indices), _stamps={})
    out.validate()
    return out


@take.register
def _(data: MMVPData, pairs: np.ndarray) -> MMVPData:
    """Pairs ``pairs`` (each pair is two images and two statements)."""
    rows = np.stack([2 * np.asarray(pairs), 2 * np.asarray(pairs) + 1], axis=1).reshape(-1)
    return dataclasses.replace(
        data, images=take(data.images, rows), statements=[data.statements[i] for i in rows],
        qids=data.qids[rows], types=[data.types[int(k)] for k in pairs])
