"""The Ray executor on a local 2-CPU Ray instance started and stopped by this module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray

from cl_bench.engine import RunOptions
from cl_bench.executors import FAULT_ENV, RayExecutor, task_resources, training_group
from cl_bench.registry import Registry
from cl_bench.sweep import plan, run_sweep
from tests.test_sweep import _snapshot


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory: pytest.TempPathFactory):
    """2 CPUs; the fault hook armed but disarmed (its marker exists) until a test removes it."""
    marker = tmp_path_factory.mktemp("fault") / "died-once"
    marker.touch()
    old = os.environ.get(FAULT_ENV)
    os.environ[FAULT_ENV] = str(marker)  # workers inherit the driver's environment
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield marker
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop(FAULT_ENV, None)
        else:
            os.environ[FAULT_ENV] = old


def _opts(tmp_path: Path, name: str) -> RunOptions:
    return RunOptions(results_dir=tmp_path / name, cache_dir=tmp_path / f"cache-{name}", device="cpu")


@pytest.mark.slow
def test_ray_equals_local_and_resumes(ray_instance, tiny_registry: Registry, tmp_path: Path) -> None:
    runs = plan(tiny_registry, ["raw-pixels", "tiny-random"], ["tiny-knn"], [0, 1])
    local = run_sweep(runs, _opts(tmp_path, "local"))
    remote = run_sweep(runs, _opts(tmp_path, "ray"), executor="ray")
    assert not local.failed and not remote.failed, remote.failed
    assert len(remote.done) == 4 and not remote.skipped
    assert _snapshot(tmp_path / "ray") == _snapshot(tmp_path / "local")  # same files, same numbers
    again = run_sweep(runs, _opts(tmp_path, "ray"), executor="ray")
    assert not again.done and len(again.skipped) == 4  # nothing redone, nothing duplicated
    assert ray.is_initialized()  # the executor leaves an instance it did not start running


def test_a_dying_worker_is_retried(ray_instance, tiny_registry: Registry, tmp_path: Path) -> None:
    ray_instance.unlink()  # arm: the first evaluation kills its worker process
    runs = plan(tiny_registry, ["raw-pixels"], ["tiny-knn"], [0, 1])
    report = run_sweep(runs, _opts(tmp_path, "r"), executor="ray")
    assert ray_instance.exists()  # a worker did die
    assert not report.failed and len(report.done) == 2
    assert sorted(_snapshot(tmp_path / "r")) == ["raw-pixels/tiny-knn/seed0.json",
                                                 "raw-pixels/tiny-knn/seed1.json"]


def test_training_is_one_task_per_method_seed_and_data(tiny_registry: Registry) -> None:
    runs = plan(tiny_registry, ["tiny-simclr", "tiny-random"], ["tiny-linear", "tiny-knn"], [0, 1])
    groups = {training_group(r) for r in runs if r.method.id == "tiny-simclr"}
    assert len(groups) == 2  # both tasks use the same digits train split: one checkpoint per seed
    assert all(training_group(r) is None for r in runs if r.method.id == "tiny-random")
    assert task_resources(runs[0]) == {"num_cpus": 1.0, "num_gpus": 0.0}


def test_shared_training_through_the_task_graph(ray_instance, tiny_registry: Registry, tmp_path: Path) -> None:
    runs = plan(tiny_registry, ["tiny-simclr"], ["tiny-linear", "tiny-knn"], [0])
    executor = RayExecutor()
    from cl_bench.plan import SweepReport

    report = SweepReport()
    executor.execute(runs, _opts(tmp_path, "r"), report, progress=False)
    assert not report.failed, report.failed
    assert executor.train_tasks == 1  # one training task feeds both evaluations
    fps = {v["model_fingerprint"] for v in _snapshot(tmp_path / "r").values()}
    assert len(fps) == 1  # both evaluated the same trained weights
    checkpoints = list((tmp_path / "cache-r" / "checkpoints").iterdir())
    assert len(checkpoints) == 1
