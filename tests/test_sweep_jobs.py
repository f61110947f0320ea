"""``clbench sweep --jobs N``: independent runs in parallel processes, the same results."""

from __future__ import annotations

from pathlib import Path

import pytest

from cl_bench.engine import RunOptions
from cl_bench.errors import ClBenchError
from cl_bench.executors import make_executor
from cl_bench.registry import Registry
from cl_bench.store import iter_results
from cl_bench.sweep import plan, run_sweep


@pytest.mark.slow
def test_two_jobs_give_the_results_of_one(tiny_registry: Registry, tmp_path: Path) -> None:
    runs = plan(tiny_registry, ["raw-pixels", "tiny-simclr"], ["tiny-linear", "tiny-knn"], [0, 1])
    metrics = {}
    for jobs in (1, 2):
        opts = RunOptions(results_dir=tmp_path / f"r{jobs}", cache_dir=tmp_path / f"c{jobs}", device="cpu", threads=1)
        report = run_sweep(runs, opts, jobs=jobs)
        assert not report.failed and len(report.done) == 8
        metrics[jobs] = {(r.method, r.task, r.seed): (r.metrics, r.model_fingerprint, r.threads)
                         for _, r in iter_results(tmp_path / f"r{jobs}")}
    assert metrics[1] == metrics[2]
    # each tiny-simclr seed trained once, in one process: its two tasks share the checkpoint
    assert len(list((tmp_path / "c2" / "checkpoints").iterdir())) == 2


def test_jobs_is_checked() -> None:
    with pytest.raises(ClBenchError, match="--jobs must be at least 1"):
        make_executor("local", jobs=0)
    with pytest.raises(ClBenchError, match="--jobs applies to --executor local"):
        make_executor("ray", jobs=2)
