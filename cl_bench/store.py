"""Result records on disk: ``<results_dir>/<method>/<task>/seed<k>.json``, written atomically.

The store cannot be escaped or confused:

- a method or task id is a plain name (``specs.PLAIN_NAME``) and a seed a bounded integer, so
  every path built here is exactly three components under the results root;
- a result and its per-item predictions change together: the predictions are written first
  under a content-addressed name (``seed<k>.<sha256[:16]>.preds.npz``), then the JSON that names
  them replaces the old one in one rename, and only then is the file the old JSON named removed
  — an interrupted rewrite leaves the old pair intact, never an old JSON naming new predictions;
- a record must agree with its path (method, task and seed): a copied or renamed file is
  refused, never counted twice;
- every file is read through :mod:`cl_bench.bounded_io` (regular files only, size-capped).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from filelock import FileLock

from cl_bench.atomic import write_atomic
from cl_bench.errors import ClBenchError
from cl_bench.predictions import Predictions, referenced_path, write_predictions
from cl_bench.specs import MAX_SEED, PLAIN_NAME, ResultRecord, TaskSpec, load_result

RESULT_FILE = re.compile(r"^seed(0|[1-9][0-9]*)\.json$")
LOCK_DIR = ".locks"
_PLAIN = re.compile(PLAIN_NAME)


def check_name(name: str, what: str) -> str:
    """``name`` if it is a plain id (one path component, not ``.``/``..``); ClBenchError otherwise."""
    if not isinstance(name, str) or not _PLAIN.match(name):
        raise ClBenchError(f"{what} id {name!r} is not a plain name (letters, digits, '.', '_', '+', '-', "
                           "starting with a letter or digit); rename it")
    return name


def result_path(results_dir: Path, method: str, task: str, seed: int) -> Path:
    check_name(method, "method")
    check_name(task, "task")
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ClBenchError(f"seed {seed!r} is outside 0..{MAX_SEED}")
    return Path(results_dir) / method / task / f"seed{seed}.json"


def _write_lock(results_dir: Path, path: Path) -> FileLock:
    """Serialises writers of one result file (not the sweep's run claim: another file)."""
    folder = Path(results_dir) / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rel = path.relative_to(results_dir).as_posix()
    return FileLock(str(folder / f"{hashlib.sha256(rel.encode()).hexdigest()[:24]}.write.lock"))


def _previous_predictions(path: Path) -> Path | None:
    """The predictions file the result now at ``path`` names, if it is readable."""
    if not path.is_file():
        return None
    try:
        return referenced_path(path, load_result(path).predictions)
    except ClBenchError:
        return None


def write_result(results_dir: Path, record: ResultRecord, predictions: Predictions | None = None) -> Path:
    """Write the record and its per-item predictions as one atomic change (see the module doc)."""
    record = ResultRecord.model_validate(record.model_dump())  # a record built in code passes the schema too
    path = result_path(results_dir, record.method, record.task, record.seed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _write_lock(results_dir, path):
            old = _previous_predictions(path)
            if predictions is not None:
                record = record.model_copy(update={"predictions": write_predictions(path, predictions)})
            text = json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True, allow_nan=False) + "\n"
            write_atomic(path, text)
            new = referenced_path(path, record.predictions)
            if old is not None and old != new:
                old.unlink(missing_ok=True)
    except OSError as e:
        raise ClBenchError(f"cannot write result {path}: {e.strerror}; check --results-dir") from None
    return path


def read_result(path: Path) -> ResultRecord:
    return load_result(path)


def check_record_path(path: Path, record: ResultRecord) -> None:
    """A record must be stored where its own method, task and seed say."""
    expected = (record.method, record.task, f"seed{record.seed}.json")
    found = (path.parent.parent.name, path.parent.name, path.name)
    if found != expected:
        raise ClBenchError(
            f"{path}: the record says method '{record.method}', task '{record.task}', seed {record.seed}, "
            f"which belongs at {'/'.join(expected)}; a copied or renamed result is refused (move it back or delete it)")


def iter_results(results_dir: Path) -> Iterator[tuple[Path, ResultRecord]]:
    """Every result under ``results_dir``: ``<method>/<task>/seed<k>.json`` files only, each checked
    against its path (unreadable or misplaced files raise ClBenchError naming them)."""
    root = Path(results_dir)
    if not root.exists():
        return
    if not root.is_dir():
        raise ClBenchError(f"results directory {root} is not a directory; pass --results-dir DIR")
    for path in sorted(root.glob("*/*/seed*.json")):
        if not RESULT_FILE.match(path.name) or path.parent.parent.name == LOCK_DIR:
            continue
        record = load_result(path)
        check_record_path(path, record)
        yield path, record


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
