"""Noisy correspondence: training captions paired with the wrong images, evaluation kept clean.

The line of work PC² belongs to (NCR, DECL, BiCro, PC²; PC²'s ``pc2/data.py``) makes a noisy
training set from a clean one with a *noise index*: ``t2i``, one int per training caption (the
captions of image ``i`` are the consecutive slots ``5i .. 5i+4``), the image that caption is
paired with. To build it, ``ratio`` × #captions slots are chosen at random and their image
indices shuffled among themselves; the array is saved as ``noise_index/<data>_<ratio>.npy``
(``np.save``, int64, e.g. ``f30k_precomp_0.2.npy`` of 145,000 entries in the authors' repo) and
reused so that every method sees the same noise.

Here a captioned split keeps its image-centric form: image ``j`` gets the captions ``s`` with
``t2i[s] == j`` (a shuffle among chosen slots leaves every image with as many captions as it
had). ``noisy-captions`` wraps any captioned-image dataset: it loads the base dataset, reads the
noise index from ``noise_file`` (relative to the data root) or builds one with NCR's procedure
from a named seed, and replaces the train split's captions; the test split is untouched. The
split remembers which (image, caption) slots are still correct (``clean``), for diagnostics
only: no objective reads it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from cl_bench.components import register
from cl_bench.data.image_text.types import CaptionedImages
from cl_bench.data.safe_paths import SafeRelPath
from cl_bench.errors import ClBenchError
from cl_bench.specs import DatasetRef
from cl_bench.params import Strict

MAX_NOISE_FILE_BYTES = 64 * 1024 * 1024


def ncr_noise_index(captions_per_image: list[int], ratio: float, seed: int) -> np.ndarray:
    """NCR's procedure: ``ratio`` of the caption slots, chosen at random, get their image indices
    shuffled among themselves. Returns ``t2i`` (int64, one entry per caption slot)."""
    t2i = np.repeat(np.arange(len(captions_per_image)), captions_per_image).astype(np.int64)
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(t2i))[: int(ratio * len(t2i))]
    shuffled = t2i[chosen].copy()
    rng.shuffle(shuffled)
    t2i[chosen] = shuffled
    return t2i


def read_noise_index(path: Path) -> np.ndarray:
    """A ``.npy`` noise index: a 1-d integer array, read without pickles, size-capped."""
    if not path.is_file():
        raise ClBenchError(f"noise file {path} does not exist (a .npy of one image index per training caption)")
    if path.stat().st_size > MAX_NOISE_FILE_BYTES:
        raise ClBenchError(f"noise file {path} is larger than {MAX_NOISE_FILE_BYTES} bytes")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ClBenchError(f"noise file {path} is not a readable .npy array ({str(e).splitlines()[0]})") from None
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ClBenchError(f"noise file {path}: expected a 1-d integer array, got {arr.dtype} of shape {arr.shape}")
    return arr.astype(np.int64)


def apply_noise_index(split: CaptionedImages, t2i: np.ndarray) -> CaptionedImages:
    """The split with image ``j``'s captions = the captions ``s`` (flattened, in order) with ``t2i[s] == j``."""
    flat = [c for caps in split.captions for c in caps]
    owner = np.repeat(np.arange(len(split.captions)), [len(c) for c in split.captions])
    if len(t2i) != len(flat):
        raise ClBenchError(f"the noise index has {len(t2i)} entries but the training split has {len(flat)} captions")
    if len(t2i) and (t2i.min() < 0 or t2i.max() >= len(split.captions)):
        raise ClBenchError(f"the noise index points outside the {len(split.captions)} training images")
    regrouped: list[list[str]] = [[] for _ in split.captions]
    clean: list[list[bool]] = [[] for _ in split.captions]
    for s, j in enumerate(t2i.tolist()):
        regrouped[j].append(flat[s])
        clean[j].append(bool(owner[s] == j))
    empty = [j for j, caps in enumerate(regrouped) if not caps]
    if empty:
        raise ClBenchError(f"the noise index leaves {len(empty)} training image(s) without a caption (first: {empty[0]})")
    out = CaptionedImages(split.images, regrouped, long_captions=split.long_captions, labels=split.labels,
                          hard_negatives=split.hard_negatives,
                          hard_negative_positives=split.hard_negative_positives, twin_of=split.twin_of)
    out.clean = clean  # type: ignore[attr-defined]  # which slots still hold a correct caption
    return out


class NoisyCaptionParams(Strict):
    base: DatasetRef = Field(default_factory=lambda: DatasetRef(name="scenes-captions"))  # the clean pairs
    ratio: float = Field(default=0.2, ge=0, lt=1)  # fraction of training captions re-paired
    seed: int = Field(default=0, ge=0)  # the seed of the generated noise index
    noise_file: SafeRelPath | None = None  # a .npy noise index under the data root (overrides ratio/seed)


@register("dataset", "noisy-captions", params=NoisyCaptionParams)
def load_noisy_captions(p: NoisyCaptionParams, data_root: Path | None = None) -> Any:
    from cl_bench import components

    if p.base.name == "noisy-captions":
        raise ClBenchError("dataset noisy-captions: base must be a clean captioned-image dataset")
    data = components.get("dataset", p.base.name)(p.base.params, data_root)
    train = getattr(data, "train", None)
    if not isinstance(train, CaptionedImages):
        raise ClBenchError(f"dataset noisy-captions: base '{p.base.name}' has no captioned training split to make noisy")
    if p.noise_file is not None:
        if data_root is None:
            raise ClBenchError("dataset noisy-captions: noise_file is relative to the data root; pass --data-root")
        t2i, source = read_noise_index(Path(data_root) / p.noise_file), {"noise_file": str(p.noise_file)}
    else:
        t2i = ncr_noise_index([len(c) for c in train.captions], p.ratio, p.seed)
        source = {"ratio": p.ratio, "seed": p.seed}
    noisy = apply_noise_index(train, t2i)
    n_noisy = int(sum(not ok for row in noisy.clean for ok in row))  # type: ignore[attr-defined]
    data.train = noisy
    digest = hashlib.sha256(t2i.tobytes()).hexdigest()
    data.name = f"{data.name}+noise:{digest[:12]}"
    data.meta = {**getattr(data, "meta", {}), "noise": {**source, "t2i_sha256": digest, "noisy_captions": n_noisy,
                                                        "captions": int(len(t2i))}}
    return data
