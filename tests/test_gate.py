"""The CI gate, one suite per family (tasks/suites.yaml gate-*, run by .ci/gate): every gate cell has
committed reference results, and a regression planted in any family's results fails
``clbench regress`` exactly as .ci/gate calls it (while the committed numbers themselves pass)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cl_bench.cli import main
from cl_bench.registry import PROJECT_ROOT, Registry
from cl_bench.suites import load_suites, suite_tasks

RESULTS = PROJECT_ROOT / "results"
FAMILIES = {"vision", "dense", "image-text", "text", "icl", "language"}


def gates() -> dict[str, tuple[list[str], list[str], int]]:
    reg = Registry()
    return {name: (suite.methods, suite_tasks(reg, name), suite.seeds)
            for name, (suite, _) in load_suites(reg).items() if name.startswith("gate-")}


GATES = gates()


def test_one_gate_per_family_and_every_cell_has_committed_results() -> None:
    assert {name.removeprefix("gate-") for name in GATES} == FAMILIES
    reg = Registry()
    for name, (methods, tasks, _) in GATES.items():
        assert methods, name
        for m in methods:
            reg.method(m)
            for t in tasks:
                assert len(list((RESULTS / m / t).glob("seed*.json"))) >= 3, f"{name}: {m} x {t}"


def _copy(methods: list[str], tasks: list[str], seeds: int, dest: Path) -> None:
    """What the gate's sweep writes: seeds 0..seeds-1 of each cell (committed files stand in)."""
    for m in methods:
        for t in tasks:
            for k in range(seeds):
                for f in (RESULTS / m / t).glob(f"seed{k}.*"):
                    (dest / m / t).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dest / m / t / f.name)


def _regress(gate: str, methods: list[str], current: Path) -> int:
    return main(["regress", "--baseline", str(RESULTS), "--results-dir", str(current), "--tasks", f"suite:{gate}",
                 "--methods", ",".join(methods)])


@pytest.mark.parametrize("gate", sorted(GATES))
def test_a_planted_regression_fails_the_family_gate(gate: str, tmp_path: Path) -> None:
    methods, tasks, seeds = GATES[gate]
    same, worse = tmp_path / "same", tmp_path / "worse"
    _copy(methods, tasks, seeds, same)
    assert _regress(gate, methods, same) == 0
    _copy(methods, tasks, seeds, worse)
    reg = Registry()
    spec = reg.task(tasks[0])
    lower_better = spec.primary_metric in (spec.regression.lower_is_better if spec.regression else [])
    for f in (worse / methods[-1] / tasks[0]).glob("seed*.json"):  # one cell of the family gets worse
        rec = json.loads(f.read_text())
        value = rec["metrics"][spec.primary_metric]
        rec["metrics"][spec.primary_metric] = value * 1.5 + 1 if lower_better else value * 0.5 - 1
        f.write_text(json.dumps(rec))
    assert _regress(gate, methods, worse) == 1
