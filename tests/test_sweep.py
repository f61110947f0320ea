"""Sweeps: --dry-run estimates, claims, SIGKILL + resume, two sweeps into one results dir."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cl_bench.engine import RunOptions
from cl_bench.executors import run_lock
from cl_bench.predictions import PREDICTIONS_SUFFIX, read_predictions
from cl_bench.registry import Registry
from cl_bench.store import result_path, write_result
from cl_bench.sweep import dry_run, plan, render_dry_run, run_sweep
from tests.conftest import TINY, write_tree
from tests.record_helpers import make_record

METHODS, TASKS, SEEDS = "raw-pixels,tiny-random", "tiny-knn", 3  # 6 runs of about a second each


def _env(registry_root: Path, cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CLBENCH_REGISTRY_PATH=str(registry_root), CLBENCH_CACHE=str(cache), OMP_NUM_THREADS="1",
               CI="1")
    return env


def _sweep_cmd(results: Path) -> list[str]:
    return [sys.executable, "-m", "cl_bench.cli", "sweep", "--methods", METHODS, "--tasks", TASKS,
            "--seeds", str(SEEDS), "--device", "cpu", "--results-dir", str(results)]


def _snapshot(results: Path) -> dict[str, dict]:
    """Every file under results (locks aside): relative path -> what must match between sweeps."""
    out = {}
    for p in sorted(results.rglob("*")):
        rel = p.relative_to(results)
        if p.is_dir() or rel.parts[0] == ".locks":
            continue
        if p.name.endswith(PREDICTIONS_SUFFIX):  # checked through its result; unnamed by it, it is an orphan
            result = p.with_name(p.name.split(".")[0] + ".json")  # seed<k>[.<sha>].preds.npz -> seed<k>.json
            ref = json.loads(result.read_text()).get("predictions") if result.exists() else None
            if not ref or ref.get("file") != p.name:
                out[str(rel)] = {"orphan predictions": True}
            continue
        data = json.loads(p.read_text())  # a partial file would fail here
        out[str(rel)] = {k: data[k] for k in ("metrics", "model_fingerprint", "task_spec_hash", "seed")}
        preds = read_predictions(p, data.get("predictions"))  # complete, and the one the result names
        out[str(rel)]["predictions"] = (preds.pred.tolist(), preds.correct.tolist())
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """An uninterrupted sweep, run once for the module (its own registry root and cache)."""
    base = tmp_path_factory.mktemp("reference")
    write_tree(base / "registry", TINY)
    done = subprocess.run(_sweep_cmd(base / "results"), env=_env(base / "registry", base / "cache"),
                          capture_output=True, text=True, timeout=300, cwd=base, check=False)
    assert done.returncode == 0, done.stderr
    snap = _snapshot(base / "results")
    assert len(snap) == 2 * SEEDS * len(TASKS.split(","))
    return base, snap


@pytest.mark.slow
def test_sigkill_midway_then_resume_equals_uninterrupted(reference, tiny_root: Path, tmp_path: Path) -> None:
    _, expected = reference
    results, env = tmp_path / "results", _env(tiny_root, tmp_path / "cache")
    proc = subprocess.Popen(_sweep_cmd(results), env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while not list(results.glob("*/*/seed*.json")):
            assert proc.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "no result appeared"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    n_at_kill = len(list(results.glob("*/*/seed*.json")))
    assert 0 < n_at_kill < len(expected)  # really midway

    resumed = subprocess.run(_sweep_cmd(results), env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr
    m = re.search(r"(\d+) run\(s\) done, (\d+) skipped", resumed.stdout)
    assert m and int(m.group(1)) == len(expected) - n_at_kill and int(m.group(2)) == n_at_kill
    assert _snapshot(results) == expected  # same files, same numbers, nothing partial or extra
    assert not [p for p in results.rglob("*.tmp")]


@pytest.mark.slow
def test_two_sweeps_at_once_lose_nothing_and_split_the_work(reference, tiny_root: Path, tmp_path: Path) -> None:
    _, expected = reference
    results, env = tmp_path / "results", _env(tiny_root, tmp_path / "cache")
    procs = [subprocess.Popen(_sweep_cmd(results), env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    done = [int(re.search(r"(\d+) run\(s\) done", o[0]).group(1)) for o in outs]
    assert sum(done) == len(expected)  # every run done exactly once between the two
    assert _snapshot(results) == expected


def test_dry_run_lists_runs_skips_and_estimates(tiny_registry: Registry, tmp_path: Path) -> None:
    results = tmp_path / "results"
    runs = plan(tiny_registry, ["raw-pixels", "tiny-random"], ["tiny-linear", "tiny-knn"], [0, 1])
    lin = tiny_registry.task("tiny-linear")
    rp = tiny_registry.method("raw-pixels")
    done = make_record(lin, "raw-pixels", 0, 90.0, total_s=4.0)
    done.method_spec_hash = rp.spec_hash()
    write_result(results, done)
    for seed, secs in [(5, 2.0), (6, 9.0)]:  # earlier raw-pixels runs of the task, other seeds
        write_result(results, make_record(lin, "raw-pixels", seed, 90.0, total_s=secs))
    write_result(results, make_record(lin, "other", 0, 90.0, total_s=30.0))
    rows = dry_run(runs, results)
    got = {(r.run.method.id, r.run.task.id, r.run.seed): r for r in rows}
    assert got[("raw-pixels", "tiny-linear", 0)].action == "skip"
    assert got[("raw-pixels", "tiny-linear", 1)].estimate_s == pytest.approx(4.0)  # median of 4, 2, 9
    assert got[("tiny-random", "tiny-linear", 0)].estimate_s == pytest.approx(6.5)  # median of 4, 2, 9, 30
    assert got[("tiny-random", "tiny-knn", 1)].estimate_s is None
    text = render_dry_run(rows)
    assert text.splitlines()[-1] == "would run 7, skip 1; ~17s estimated for 3 of them (sequential, local)"
    assert not list(results.glob("tiny-random/*/*.json"))  # a dry run runs nothing


HOLDER = """
import json, os, sys, time
from filelock import FileLock
lock_path, ready, result, text = sys.argv[1:5]
with FileLock(lock_path):
    open(ready, "w").close()
    time.sleep(1.0)
    os.makedirs(os.path.dirname(result), exist_ok=True)
    with open(result + ".part", "w") as f:
        f.write(text)
    os.replace(result + ".part", result)
"""


def test_claimed_run_is_left_to_its_owner_and_temp_files_are_cleaned(tiny_registry: Registry, tmp_path: Path) -> None:
    results = tmp_path / "results"
    runs = plan(tiny_registry, ["raw-pixels"], ["tiny-linear"], [0, 1])
    leftover = result_path(results, "raw-pixels", "tiny-linear", 1).parent / ".seed1.json.abc123.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_text('{"half": ')  # what a SIGKILLed writer leaves
    # "another sweep" (a process) holds seed 0's claim and finishes it while we wait
    rec = make_record(tiny_registry.task("tiny-linear"), "raw-pixels", 0, 12.5)
    rec.method_spec_hash = runs[0].method.spec_hash()
    final = result_path(results, "raw-pixels", "tiny-linear", 0)
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, run_lock(results, runs[0]).lock_file, str(ready),
                               str(final), json.dumps(rec.model_dump(mode="json"))])
    try:
        while not ready.exists():
            assert holder.poll() is None
            time.sleep(0.01)
        report = run_sweep(runs, RunOptions(results_dir=results, cache_dir=tmp_path / "cache", device="cpu"))
    finally:
        holder.wait(timeout=60)
    assert [r.seed for r, *_ in report.done] == [1] and [r.seed for r in report.skipped] == [0]
    assert json.loads(final.read_text())["metrics"]["top1"] == 12.5  # not redone
    assert not leftover.exists()
