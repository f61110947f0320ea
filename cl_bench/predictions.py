"""Per-sample predictions stored beside a result, and the diff of two runs.

A protocol may return :class:`Predictions` (one row per evaluated item: its id, what the model
predicted, the target, whether it was counted correct). The store writes them compressed next
to the result JSON (``seed<k>.preds.npz``) and records the file's sha256 in the result, so
``clbench diff A B`` can list the items that flipped between two runs or checkpoints.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cl_bench.atomic import write_atomic
from cl_bench.errors import ClBenchError

PREDICTIONS_SUFFIX = ".preds.npz"


@dataclass
class Predictions:
    """``item``: ids of the evaluated items (unique); ``pred``/``target``: what was predicted and
    the truth (ints or strings); ``correct``: the protocol's own verdict per item."""

    item: np.ndarray
    pred: np.ndarray
    correct: np.ndarray
    target: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.item = np.asarray(self.item)
        self.pred = np.asarray(self.pred)
        self.correct = np.asarray(self.correct, dtype=bool)
        self.target = None if self.target is None else np.asarray(self.target)
        n = len(self.item)
        for name in ("pred", "correct", "target"):
            a = getattr(self, name)
            if a is not None and len(a) != n:
                raise ValueError(f"predictions: {name} has {len(a)} rows for {n} items")
        if len(np.unique(self.item)) != n:
            raise ValueError("predictions: item ids must be unique")

    def to_bytes(self) -> bytes:
        arrays = {"item": self.item, "pred": self.pred, "correct": self.correct}
        if self.target is not None:
            arrays["target"] = self.target
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()


    @classmethod
    def from_bytes(cls, blob: bytes) -> Predictions:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            return cls(item=z["item"], pred=z["pred"], correct=z["correct"],
                       target=z["target"] if "target" in z.files else None)


def predictions_path(result_path: Path, sha256: str | None = None) -> Path:
    """``.../seed0.json`` -> ``.../seed0.<sha256[:16]>.preds.npz`` (content-addressed, how results are
    written now) or, without ``sha256``, the fixed ``.../seed0.preds.npz`` older results name."""
    stem = result_path.name.removesuffix(".json")
    return result_path.with_name(f"{stem}.{sha256[:16]}{PREDICTIONS_SUFFIX}" if sha256 else stem + PREDICTIONS_SUFFIX)


def write_predictions(result_path: Path, preds: Predictions) -> dict[str, object]:
    """Write atomically beside ``result_path`` under a name that includes the content's sha256, so
    a new file never replaces the one an older result JSON still names; returns the reference
    stored in the result."""
    blob = preds.to_bytes()
    sha = hashlib.sha256(blob).hexdigest()
    path = predictions_path(result_path, sha)
    write_atomic(path, blob)
    return {"file": path.name, "sha256": sha, "n": int(len(preds.item))}


def referenced_path(result_path: Path, ref: dict[str, object] | None) -> Path | None:
    """The predictions file a result names (a sibling of its JSON), or None."""
    return None if not ref else Path(result_path).with_name(Path(str(ref["file"])).name)


MAX_PREDICTIONS_BYTES = 2**30


def read_predictions(result_path: Path, ref: dict[str, object] | None) -> Predictions:
    """The predictions a result refers to, checked against the sha256 it recorded."""
    from cl_bench.bounded_io import read_bytes

    path = referenced_path(result_path, ref)
    if path is None or ref is None:
        raise ClBenchError(f"{result_path} has no stored predictions; re-run it with this version of cl_bench")
    if not path.exists():
        raise ClBenchError(f"{path} is missing (referenced by {result_path}); re-run the result")
    blob = read_bytes(path, MAX_PREDICTIONS_BYTES, "predictions file")
    if hashlib.sha256(blob).hexdigest() != ref.get("sha256"):
        raise ClBenchError(f"{path} does not match the sha256 recorded in {result_path}; re-run the result")
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:  # npz: refuse a bomb before numpy inflates it
            declared = sum(i.file_size for i in z.infolist())
        if declared > MAX_PREDICTIONS_BYTES:
            raise ClBenchError(f"{path} declares {declared} bytes of arrays, more than {MAX_PREDICTIONS_BYTES}; "
                               "refused before decompressing it")
        return Predictions.from_bytes(blob)
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ClBenchError(f"{path} is not a readable predictions file ({type(e).__name__}); re-run the result") from None
