"""MMVP-VLM (tsb0601/MMVP; Hugging Face ``MMVP/MMVP_VLM``): image pairs that CLIP-style encoders
confuse, one statement per image, nine visual patterns.

On-disk layout (the released dataset; ``--data-root`` / ``CLBENCH_DATA`` points above it)::

    DATA_ROOT/MMVP_VLM/
        Questions.csv                    header + one row per statement: qid, type, statement
        MLLM_VLM Images/<type>/<qid>.jpg (the release; the README says MMVP_VLM_Images/)

Consecutive CSV rows form a pair; both images of a pair are read from the folder named by the
pair's first ``type`` (as ``scripts/evaluate_vlm.py`` does). Statement ``j`` of a pair belongs
to image 1 when its qid is odd and to image 2 when it is even (the script's ground truth).
The release has 9 patterns x 15 pairs = 270 images; the script assigns pattern
``pair_index // 15`` in the order of :data:`PATTERNS`, which on the release equals the pattern
named by the ``type`` column — this loader uses the ``type`` column (robust to other counts).

Errors a user can cause (one line each): the CSV or the image folder missing, a row without
three cells or with a non-integer qid, an odd number of statement rows, the two rows of a pair
naming different types, a missing image.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from cl_bench import components
from cl_bench.bounded_io import MAX_DATA_TEXT_BYTES, read_text
from cl_bench.components import register
from cl_bench.data.image_decode import open_image
from cl_bench.data.image_text.types import ImageList
from cl_bench.data.safe_paths import SafeRelPath
from cl_bench.data.text.types import fingerprint_texts
from cl_bench.errors import ClBenchError
from cl_bench.specs import validate_params

# The nine visual patterns, in the order of scripts/evaluate_vlm.py.
PATTERNS: tuple[str, ...] = (
    "Orientation and Direction", "Presence of Specific Features", "State and Condition",
    "Quantity and Count", "Positional and Relational Context", "Color and Appearance",
    "Structural Characteristics", "Texts", "Viewpoint and Perspective",
)
# The release's image folders (= CSV type values) -> pattern.
TYPE_TO_PATTERN: dict[str, str] = {
    "orientation": PATTERNS[0], "presence": PATTERNS[1], "state": PATTERNS[2], "quantity": PATTERNS[3],
    "spatial": PATTERNS[4], "color": PATTERNS[5], "structural character": PATTERNS[6], "text": PATTERNS[7],
    "camera perspective": PATTERNS[8],
}
IMAGE_DIRS: tuple[str, ...] = ("MLLM_VLM Images", "MMVP_VLM_Images")
LAYOUT = ("expected DATA_ROOT/{root}/Questions.csv (qid, type, statement; consecutive rows form a pair) and "
          "DATA_ROOT/{root}/MLLM_VLM Images/<type>/<qid>.jpg")


def pattern_of(type_name: str) -> str:
    """The pattern a CSV ``type`` names (``Spatial`` -> ``Positional and Relational Context``);
    an unknown type is its own pattern."""
    key = " ".join(type_name.replace("_", " ").split()).lower()
    return TYPE_TO_PATTERN.get(key, type_name.strip())


def own_image(qid: int) -> int:
    """Which image of its pair (0 or 1) a statement describes: evaluate_vlm.py's qid parity."""
    return 0 if qid % 2 == 1 else 1


@dataclass
class MMVPData:
    """MMVP-VLM pairs: pair ``k`` is images ``2k`` and ``2k + 1`` with statements ``2k``, ``2k + 1``.

    ``train`` (methods trained fresh) is loaded on first use from ``train_ref`` = (dataset name,
    params); evaluation-only data has no ``train_ref``.
    """

    name: str
    images: ImageList
    statements: list[str]
    qids: np.ndarray
    types: list[str]  # CSV type (image folder) of each pair
    arch_inputs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    train_ref: tuple[str, dict[str, Any]] | None = None
    _train: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.qids = np.asarray(self.qids, dtype=np.int64)
        n = len(self.types)
        if not (len(self.images) == len(self.statements) == len(self.qids) == 2 * n):
            raise ValueError(f"{self.name}: {len(self.images)} images, {len(self.statements)} statements, "
                             f"{len(self.qids)} qids for {n} pairs (need 2 per pair)")
        self.patterns = [pattern_of(t) for t in self.types]

    @property
    def n_pairs(self) -> int:
        return len(self.types)

    @property
    def fingerprint(self) -> str:
        texts = list(self.statements) + list(self.types)
        h = hashlib.sha256(b"cl_bench.mmvp.v1\0" + self.name.encode() + b"\0")
        h.update(self.images.fingerprint.encode())
        h.update(fingerprint_texts(texts, hashlib.sha256(self.qids.tobytes()).hexdigest()).encode())
        return h.hexdigest()

    @property
    def train(self) -> Any:
        if self._train is None:
            self._train = training_split(self.name, self.train_ref)
        return self._train


def training_split(name: str, train_ref: tuple[str, dict[str, Any]] | None) -> Any:
    """The train split of the dataset ``train_ref`` names (methods trained fresh on an embedded
    evaluation set learn from it); evaluation-only data (no ``train_ref``) is a user error."""
    if train_ref is None:
        raise ClBenchError(
            f"dataset '{name}' is evaluation-only; a method that trains must name its training data in "
            "train.data (e.g. {name: scenes-captions})"
        )
    ref_name, params = train_ref
    return components.get("dataset", ref_name)(params, None).train


def _read_image(path: Path, size: int | None) -> np.ndarray:
    """uint8 [H, W, 3] as decoded (``size`` None), else squashed to ``size`` x ``size`` (bicubic)."""
    with open_image(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return np.asarray(im, dtype=np.uint8)


class MMVPRow(BaseModel):
    """One statement row: ``type`` names an image folder inside the image root (never ``../x``)."""

    model_config = ConfigDict(extra="forbid")
    qid: int = Field(ge=0, le=10**9)
    type: SafeRelPath
    statement: str


def read_questions(csv_path: Path) -> list[tuple[int, str, str, int]]:
    """(qid, type, statement, line number) per statement row; the header row is skipped."""
    text = read_text(csv_path, MAX_DATA_TEXT_BYTES, "questions CSV")
    try:
        lines = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise ClBenchError(f"{csv_path} is not a readable CSV ({e})") from None
    rows = []
    for lineno, cells in enumerate(lines[1:], start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != 3:
            raise ClBenchError(f"{csv_path} line {lineno}: expected 3 cells (qid, type, statement), got {len(cells)}")
        try:
            qid = int(cells[0])
        except ValueError:
            raise ClBenchError(f"{csv_path} line {lineno}: qid {cells[0]!r} is not an integer") from None
        row = validate_params(MMVPRow, {"qid": qid, "type": cells[1].strip(), "statement": cells[2].strip()},
                              f"{csv_path} line {lineno}")
        rows.append((row.qid, row.type, row.statement, lineno))
    if not rows:
        raise ClBenchError(f"{csv_path} has no statement rows")
    if len(rows) % 2:
        raise ClBenchError(
            f"{csv_path} has an odd number of statement rows ({len(rows)}); consecutive rows form an "
            "image pair, so the count must be even"
        )
    return rows


def read_mmvp_vlm(root: Path, *, name: str, image_size: int | None, images_dir: str | None = None,
                  layout: str = "", meta: dict[str, Any] | None = None,
                  train_ref: tuple[str, dict[str, Any]] | None = None) -> MMVPData:
    """Read an MMVP-VLM tree (``Questions.csv`` + image folders) into :class:`MMVPData`."""
    layout = layout or LAYOUT.format(root=root.name)
    csv_path = root / "Questions.csv"
    if not csv_path.is_file():
        raise ClBenchError(f"{csv_path} is missing; {layout}")
    candidates = [images_dir] if images_dir else list(IMAGE_DIRS)
    image_root = next((root / d for d in candidates if (root / d).is_dir()), None)
    if image_root is None:
        raise ClBenchError(f"no image folder {' or '.join(repr(d) for d in candidates)} under {root}; {layout}")
    rows = read_questions(csv_path)
    images, statements, qids, types = [], [], [], []
    for k in range(0, len(rows), 2):
        (q1, t1, s1, l1), (q2, t2, s2, l2) = rows[k], rows[k + 1]
        if pattern_of(t1) != pattern_of(t2):
            raise ClBenchError(f"{csv_path} lines {l1}-{l2}: the two rows of a pair name different types "
                               f"({t1!r}, {t2!r})")
        for qid, line in ((q1, l1), (q2, l2)):
            path = image_root / t1 / f"{qid}.jpg"
            if not path.is_file():
                raise ClBenchError(f"MMVP-VLM image {path} (qid {qid}, {csv_path.name} line {line}) is missing")
            images.append(_read_image(path, image_size))
        statements += [s1, s2]
        qids += [q1, q2]
        types.append(t1)
    return MMVPData(
        name, ImageList(images), statements, np.asarray(qids), types,
        arch_inputs={"in_channels": 3, **({} if image_size is None else {"image_size": (image_size, image_size)})},
        meta={"root": str(root), "image_folder": image_root.name, "n_pairs": len(types), **(meta or {})},
        train_ref=train_ref,
    )


class MMVPVLMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = "MMVP_VLM"
    images_dir: str | None = None  # default: 'MLLM_VLM Images', else 'MMVP_VLM_Images'
    # None (default): each image as decoded, so the model applies its own preprocessing, as
    # scripts/evaluate_vlm.py does (preprocess(Image.open(...))); an integer: squashed to that
    # square first (version 1 of task mmvp-vlm: 224)
    image_size: int | None = Field(default=None, ge=8, le=1024)


@register("dataset", "mmvp-vlm")
def load_mmvp_vlm(params: dict[str, Any] | None, data_root: Path | None) -> MMVPData:
    """The released MMVP-VLM benchmark (9 patterns x 15 pairs) in its own layout."""
    p = validate_params(MMVPVLMParams, params, "dataset 'mmvp-vlm' params")
    layout = LAYOUT.format(root=p.root)
    if data_root is None:
        raise ClBenchError(f"dataset 'mmvp-vlm' needs real data: pass --data-root (or set CLBENCH_DATA); {layout}")
    root = Path(data_root) / p.root
    if not root.is_dir():
        raise ClBenchError(f"{root} is missing; {layout}")
    return read_mmvp_vlm(root, name="mmvp-vlm", image_size=p.image_size, images_dir=p.images_dir, layout=layout)
