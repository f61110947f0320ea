"""A result record for tests: a registered method's current spec hash, fixed provenance fields."""

from __future__ import annotations

from cl_bench.registry import Registry
from cl_bench.specs import ResultRecord, TaskSpec, Timings


def _method_hash(method: str, task: str | None = None) -> str:
    """A registered method's current spec hash on ``task`` (else its results would be stale), else a stand-in."""
    reg = Registry()
    if method not in set(reg.method_ids()):
        return "m" * 64
    spec = reg.method(method)
    return (spec.for_task(task) if task else spec).spec_hash()


def make_record(task: TaskSpec, method: str, seed: int, top1: float, *, top5: float | None = None,
                extras: dict | None = None, spec_hash: str | None = None, checkpoint: dict | None = None,
                total_s: float = 2.0, fingerprint: str | None = None) -> ResultRecord:
    return ResultRecord(
        task=task.id, task_version=task.version, task_spec_hash=spec_hash or task.spec_hash(),
        method=method, method_spec_hash=_method_hash(method, task.id), seed=seed, primary_metric=task.primary_metric,
        metrics={"top1": top1, "top5": top5 if top5 is not None else min(100.0, top1 + 5)},
        extras=extras if extras is not None else {"num_classes": 10, "n_test": 540},
        model_fingerprint=fingerprint or f"{seed:02d}{'ab' * 31}", model_source="trained",
        checkpoint=checkpoint, dataset_fingerprint="d" * 64, code_version="0.1.0",
        git_commit="0123456789abcdef", libraries={"torch": "2"}, device="cpu:test:1threads",
        timings=Timings(total_s=total_s), created_utc="2026-01-02T03:04:05Z",
    )
