"""Result records on disk: ``<results_dir>/<method>/<task>/seed<k>.json``, written atomically."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from cl_bench.atomic import write_atomic
from cl_bench.errors import ClBenchError
from cl_bench.predictions import Predictions, write_predictions
from cl_bench.specs import ResultRecord, TaskSpec, load_result


def result_path(results_dir: Path, method: str, task: str, seed: int) -> Path:
    return Path(results_dir) / method / task / f"seed{seed}.json"


def write_result(results_dir: Path, record: ResultRecord, predictions: Predictions | None = None) -> Path:
    """Write the record (and first its per-item predictions, if any: a reader never sees a
    result whose predictions file is not complete)."""
    path = result_path(results_dir, record.method, record.task, record.seed)
    if predictions is not None:
        try:
            record = record.model_copy(update={"predictions": write_predictions(path, predictions)})
        except OSError as e:
            raise ClBenchError(f"cannot write predictions beside {path}: {e.strerror}; check --results-dir") from None
    text = json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    try:
        write_atomic(path, text)
    except OSError as e:
        raise ClBenchError(f"cannot write result {path}: {e.strerror}; check --results-dir") from None
    return path


def read_result(path: Path) -> ResultRecord:
    return load_result(path)


def iter_results(results_dir: Path) -> Iterator[tuple[Path, ResultRecord]]:
    """Every result under ``results_dir`` (unreadable files raise ClBenchError naming them)."""
    root = Path(results_dir)
    if not root.exists():
        return
    for path in sorted(root.glob("*/*/seed*.json")):
        yield path, load_result(path)


def is_comparable(record: ResultRecord, task: TaskSpec) -> bool:
    """A result counts for ``task`` only if it was measured under the current spec."""
    return record.task == task.id and record.task_spec_hash == task.spec_hash()


def results_frame(results_dir: Path) -> pd.DataFrame:
    """One row per result: method, task, seed, spec hashes, primary value, every metric."""
    rows = []
    for path, r in iter_results(results_dir):
        row = {
            "path": str(path), "method": r.method, "task": r.task, "seed": r.seed,
            "task_version": r.task_version, "task_spec_hash": r.task_spec_hash,
            "method_spec_hash": r.method_spec_hash, "model_fingerprint": r.model_fingerprint,
            "primary_metric": r.primary_metric, "primary": r.primary, "created_utc": r.created_utc,
        }
        row.update({f"metric:{k}": v for k, v in r.metrics.items()})
        rows.append(row)
    return pd.DataFrame(rows)
