"""Where a sweep's runs execute: ``local`` (one after another, the default) or ``ray``.

Both claim each run with a lock file under ``<results>/.locks/`` before doing it, so two
sweeps into one results directory split the work and an interrupted sweep resumes cleanly.

Ray: each (method, task, seed) run is a Ray task with the CPUs/GPUs of the task spec's
optional ``resources`` block (default 1 CPU, 0 GPU). Training a method's checkpoint is its
own Ray task, once per (method, seed, training data); the evaluation tasks that need it take
its output (the cached checkpoint's files) as an argument, so the dependency is in the task
graph and workers on other nodes receive the weights through the object store. Workers return
the record; the driver writes it atomically. A worker that dies is retried by Ray.
"""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from cl_bench.atomic import write_atomic
from cl_bench.engine import RunOptions
from cl_bench.errors import ClBenchError
from cl_bench.plan import PlannedRun, SweepReport, existing_comparable
from cl_bench.predictions import Predictions
from cl_bench.specs import ResultRecord, canonical_hash
from cl_bench.store import result_path, write_result

LOCK_DIR = ".locks"
FAULT_ENV = "CLBENCH_FAULT_KILL_WORKER_ONCE"  # test hook: path of a marker; first evaluation dies
CHECKPOINT_FILES = ("encoder.safetensors", "card.json")


# --------------------------------------------------------------------------- claims

def run_lock(results_dir: Path, run: PlannedRun) -> FileLock:
    name = hashlib.sha256(f"{run.method.id}\0{run.task.id}\0{run.seed}".encode()).hexdigest()[:24]
    folder = Path(results_dir) / LOCK_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / f"{name}.lock"))


def remove_stale_temp_files(results_dir: Path, run: PlannedRun) -> None:
    """Temp files a killed writer of this run left behind (call only while holding its claim)."""
    final = result_path(results_dir, run.method.id, run.task.id, run.seed)
    if final.parent.is_dir():
        for tmp in final.parent.glob(f".{final.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def try_claim(results_dir: Path, run: PlannedRun) -> FileLock | None:
    lock = run_lock(results_dir, run)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    remove_stale_temp_files(results_dir, run)
    return lock


@contextmanager
def claimed(results_dir: Path, run: PlannedRun) -> Iterator[None]:
    """Wait for the run's claim (another sweep may hold it), then hold it."""
    lock = run_lock(results_dir, run)
    with lock:
        remove_stale_temp_files(results_dir, run)
        yield


def _describe(e: BaseException) -> str:
    if isinstance(e, ClBenchError):
        return str(e)
    return f"{type(e).__name__}: {e} | {traceback.format_exc(limit=3)!r}"


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled or not total:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="run")


# --------------------------------------------------------------------------- local

class LocalExecutor:
    """One run after another in this process; claimed runs of another sweep are done last.

    ``jobs`` > 1: independent runs in that many worker processes (runs of one method and seed
    stay together, in order, so a checkpoint is trained once); each process gets
    ``threads // jobs`` torch threads (at least 1), recorded in its results.
    """

    name = "local"

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = max(1, int(jobs))

    def execute(self, todo: list[PlannedRun], opts: RunOptions, report: SweepReport, progress: bool) -> None:
        if self.jobs > 1 and len(todo) > 1:
            return self._parallel(todo, opts, report, progress)
        bar = _progress_bar(len(todo), progress)
        deferred = []
        for r in todo:
            lock = try_claim(opts.results_dir, r)
            if lock is None:
                deferred.append(r)
                continue
            try:
                self._one(r, opts, report, bar)
            finally:
                lock.release()
        for r in deferred:
            with claimed(opts.results_dir, r):
                self._one(r, opts, report, bar)
        if bar is not None:
            bar.close()

    def _parallel(self, todo: list[PlannedRun], opts: RunOptions, report: SweepReport, progress: bool) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        groups: dict[str, list[PlannedRun]] = {}  # one method and seed: one process, in order
        for r in todo:  # (a trained checkpoint is trained once; a LM's log-likelihoods are reused)
            groups.setdefault(training_group(r) or f"{r.method.id}\0{r.seed}", []).append(r)
        threads = max(1, (opts.threads or self.jobs) // self.jobs)
        job_opts = replace(opts, threads=threads, progress=False)
        bar = _progress_bar(len(todo), progress)
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(groups)), mp_context=ctx) as pool:
            futures = [pool.submit(run_group, runs, job_opts) for runs in groups.values()]
            for fut in as_completed(futures):
                part = fut.result()
                report.done += part.done
                report.skipped += part.skipped
                report.failed += part.failed
                if bar is not None:
                    bar.update(len(part.done) + len(part.skipped) + len(part.failed))
        if bar is not None:
            bar.close()

    @staticmethod
    def _one(r: PlannedRun, opts: RunOptions, report: SweepReport, bar: Any) -> None:
        from cl_bench.engine import run

        if existing_comparable(opts.results_dir, r):
            report.skipped.append(r)  # another sweep did it meanwhile
        else:
            if bar is not None:
                bar.set_description(r.label)
            t0 = time.perf_counter()
            try:
                outcome = run(r.task, r.method, replace(opts, seed=r.seed))
                report.done.append((r, outcome.record.primary, time.perf_counter() - t0))
            except Exception as e:  # noqa: BLE001 - one broken run must not stop the sweep
                report.failed.append((r, _describe(e)))
        if bar is not None:
            bar.update(1)


def run_group(runs: list[PlannedRun], opts: RunOptions) -> SweepReport:
    """A worker process of ``--jobs``: these runs in order, claimed as the local executor does."""
    part = SweepReport()
    LocalExecutor().execute(runs, opts, part, progress=False)
    return part


# --------------------------------------------------------------------------- ray (worker side)

def task_resources(run: PlannedRun) -> dict[str, float]:
    """CPUs/GPUs a run asks for: the task spec's optional ``resources`` block, else 1 CPU."""
    block: Any = getattr(run.task, "resources", None) or {}
    get = block.get if isinstance(block, dict) else (lambda k, d=None: getattr(block, k, d))
    return {"num_cpus": float(get("cpus", 1) or 1), "num_gpus": float(get("gpus", 0) or 0)}


def training_group(run: PlannedRun) -> str | None:
    """Runs with the same key share one trained checkpoint; None when nothing is trained."""
    recipe = run.method.train
    if recipe is None or recipe.epochs == 0 or run.method.checkpoint:
        return None
    data = recipe.data.model_dump(mode="json") if recipe.data else run.task.dataset.model_dump(mode="json")
    return canonical_hash({"method": run.method.spec_hash(), "seed": run.seed, "data": data})


def train_checkpoint(run: PlannedRun, opts: RunOptions) -> dict[str, Any]:
    """Train (or reuse) the run's checkpoint; return its cache key and files, or an error."""
    from cl_bench.cache import cache_root

    with cache_root(opts.cache_dir):  # the training data is generated under --cache-dir too
        return _train_checkpoint(run, opts)


def _train_checkpoint(run: PlannedRun, opts: RunOptions) -> dict[str, Any]:
    try:
        from cl_bench import components
        from cl_bench.cache import Cache
        from cl_bench.engine import data_root_of, resolve_device
        from cl_bench.obtain import obtain_model

        data = components.get("dataset", run.task.dataset.name)(run.task.dataset.params, data_root_of(opts))
        cache = Cache(opts.cache_dir)
        got = obtain_model(run.method, data, seed=run.seed, device=resolve_device(opts.device), cache=cache,
                           data_root=data_root_of(opts), registry=opts.registry)
        if not got.card:
            return {"key": None, "files": {}}
        folder = cache.checkpoint_dir(got.card["cache_key"])
        return {"key": got.card["cache_key"], "files": {n: (folder / n).read_bytes() for n in CHECKPOINT_FILES}}
    except Exception as e:  # noqa: BLE001 - reported by the evaluations that needed it
        return {"error": f"training failed: {_describe(e)}"}


def install_checkpoint(opts: RunOptions, artifact: dict[str, Any]) -> None:
    """Put a trained checkpoint's files into this worker's cache (a no-op where they exist)."""
    from cl_bench.cache import Cache

    if not artifact.get("key"):
        return
    cache = Cache(opts.cache_dir)
    folder = cache.checkpoint_dir(artifact["key"])
    with cache.lock(folder / "train"):
        if all((folder / n).exists() for n in CHECKPOINT_FILES):
            return
        for name in CHECKPOINT_FILES:  # the card last: its presence means "complete"
            write_atomic(folder / name, artifact["files"][name])


def _maybe_die_for_test() -> None:
    marker = os.environ.get(FAULT_ENV)
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)  # a worker dying mid-task, as on a node failure


def evaluate_run(run: PlannedRun, opts: RunOptions, artifact: dict[str, Any] | None) -> dict[str, Any]:
    """One run in a worker; returns the record as JSON (not written) or an error."""
    from cl_bench.engine import run as engine_run

    _maybe_die_for_test()
    t0 = time.perf_counter()
    try:
        if artifact is not None:
            if "error" in artifact:
                return {"error": artifact["error"]}
            install_checkpoint(opts, artifact)
        outcome = engine_run(run.task, run.method, replace(opts, seed=run.seed, write=False, progress=False))
        preds = outcome.predictions
        return {"record": outcome.record.model_dump(mode="json"), "seconds": time.perf_counter() - t0,
                "predictions": None if preds is None else preds.to_bytes()}
    except Exception as e:  # noqa: BLE001 - reported by the driver
        return {"error": _describe(e)}


# --------------------------------------------------------------------------- ray (driver side)

def _absolute(opts: RunOptions) -> RunOptions:
    from cl_bench.cache import Cache

    return replace(
        opts,
        cache_dir=Cache(opts.cache_dir).root.resolve(),
        data_root=Path(opts.data_root).expanduser().resolve() if opts.data_root else None,
        results_dir=Path(opts.results_dir).resolve(),
    )


class RayExecutor:
    """Runs as Ray tasks; the driver claims them, waits for results and writes each one."""

    name = "ray"

    def __init__(self, address: str | None = None, max_retries: int = 3) -> None:
        self.address = address
        self.max_retries = max_retries
        self.train_tasks = 0  # training tasks submitted (one per method, seed and training data)

    def _connect(self) -> tuple[Any, bool]:
        try:
            import ray
        except ImportError:
            raise ClBenchError("--executor ray needs Ray: pip install 'ray>=2.9'") from None
        if ray.is_initialized():
            return ray, False
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except ConnectionError as e:
            raise ClBenchError(f"cannot reach the Ray cluster at --address {self.address}: {e}") from None
        return ray, True

    def execute(self, todo: list[PlannedRun], opts: RunOptions, report: SweepReport, progress: bool) -> None:
        ray, started = self._connect()
        opts = _absolute(opts)
        bar = _progress_bar(len(todo), progress)
        try:
            held: list[tuple[PlannedRun, FileLock]] = []
            deferred = []
            for r in todo:
                lock = try_claim(opts.results_dir, r)
                (held.append((r, lock)) if lock is not None else deferred.append(r))
            self._batch(ray, held, opts, report, bar)
            for r in deferred:  # held by another sweep: wait for it, do what it left undone
                lock = run_lock(opts.results_dir, r)
                lock.acquire()
                remove_stale_temp_files(opts.results_dir, r)
                if existing_comparable(opts.results_dir, r):
                    report.skipped.append(r)
                    lock.release()
                    if bar is not None:
                        bar.update(1)
                else:
                    self._batch(ray, [(r, lock)], opts, report, bar)
        finally:
            if bar is not None:
                bar.close()
            if started:
                ray.shutdown()

    def _batch(self, ray: Any, held: list[tuple[PlannedRun, FileLock]], opts: RunOptions,
               report: SweepReport, bar: Any) -> None:
        train = ray.remote(max_retries=self.max_retries)(train_checkpoint)
        evaluate = ray.remote(max_retries=self.max_retries)(evaluate_run)
        trained: dict[str, Any] = {}
        pending: dict[Any, tuple[PlannedRun, FileLock, float]] = {}
        try:
            for r, lock in held:
                if existing_comparable(opts.results_dir, r):
                    report.skipped.append(r)
                    lock.release()
                    continue
                res = task_resources(r)
                group = training_group(r)
                dep = None
                if group is not None:
                    if group not in trained:
                        trained[group] = train.options(**res).remote(r, opts)
                        self.train_tasks += 1
                    dep = trained[group]
                ref = evaluate.options(**res).remote(r, opts, dep)
                pending[ref] = (r, lock, time.perf_counter())
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                r, lock, t0 = pending.pop(ref)
                try:
                    self._collect(ray, ref, r, opts, report, t0)
                finally:
                    lock.release()
                if bar is not None:
                    bar.set_description(r.label)
                    bar.update(1)
        finally:
            for r, lock, _ in pending.values():
                lock.release()

    @staticmethod
    def _collect(ray: Any, ref: Any, r: PlannedRun, opts: RunOptions, report: SweepReport, t0: float) -> None:
        try:
            out = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - e.g. retries exhausted
            report.failed.append((r, f"{type(e).__name__}: {e}"))
            return
        if "error" in out:
            report.failed.append((r, out["error"]))
            return
        record = ResultRecord.model_validate(out["record"])
        blob = out.get("predictions")
        write_result(opts.results_dir, record, None if blob is None else Predictions.from_bytes(blob))
        report.done.append((r, record.primary, time.perf_counter() - t0))


def make_executor(name: str, address: str | None = None, jobs: int = 1) -> LocalExecutor | RayExecutor:
    if jobs < 1:
        raise ClBenchError(f"--jobs must be at least 1, got {jobs}")
    if name == "local":
        if address:
            raise ClBenchError("--address only applies to --executor ray")
        return LocalExecutor(jobs)
    if jobs != 1:
        raise ClBenchError("--jobs applies to --executor local (Ray schedules its own workers)")
    if name == "ray":
        return RayExecutor(address)
    raise ClBenchError(f"unknown executor '{name}'; use local or ray")
