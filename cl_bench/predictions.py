"""Per-sample predictions stored beside a result, and the diff of two runs.

A protocol may return :class:`Predictions` (one row per evaluated item: its id, what the model
predicted, the target, whether it was counted correct). The store writes them compressed next
to the result JSON (``seed<k>.preds.npz``) and records the file's sha256 in the result, so
``clbench diff A B`` can list the items that flipped between two runs or checkpoints.
"""

from __future__ import annotations

import hashlib
import io
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


def predictions_path(result_path: Path) -> Path:
    """``.../seed0.json`` -> ``.../seed0.preds.npz``."""
    return result_path.with_name(result_path.name.removesuffix(".json") + PREDICTIONS_SUFFIX)


def write_predictions(result_path: Path, preds: Predictions) -> dict[str, object]:
    """Write atomically beside ``result_path``; returns the reference stored in the result."""
    blob = preds.to_bytes()
    path = predictions_path(result_path)
    write_atomic(path, blob)
    return {"file": path.name, "sha256": hashlib.sha256(blob).hexdigest(), "n": int(len(preds.item))}


def read_predictions(result_path: Path, ref: dict[str, object] | None) -> Predictions:
    """The predictions a result refers to, checked against the sha256 it recorded."""
    if not ref:
        raise ClBenchError(f"{result_path} has no stored predictions; re-run it with this version of cl_bench")
    path = Path(result_path).with_name(str(ref["file"]))
    if not path.exists():
        raise ClBenchError(f"{path} is missing (referenced by {result_path}); re-run the result")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != ref.get("sha256"):
        raise ClBenchError(f"{path} does not match the sha256 recorded in {result_path}; re-run the result")
    return Predictions.from_bytes(blob)
