"""The hostile corpus (``tests/hostile/cases.py``), each case in a fresh ``clbench`` process under a
time and memory cap: every case ends in its documented outcome — exit 2 with one
``clbench: error:`` line, or the documented exit code — with no traceback and nothing written
outside the results and cache directories.

The cases' inputs are built in this process, then the selected cases' CLI processes run
side by side (``CLBENCH_HOSTILE_WORKERS``, default: the CPU count) and each test checks one.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.hostile.cases import CASES, Case
from tests.hostile.runner import Outcome, run_cli

WORKERS = int(os.environ.get("CLBENCH_HOSTILE_WORKERS", "0")) or max(2, os.cpu_count() or 2)


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    selected = {item.callspec.params["case"].name for item in request.session.items
                if item.originalname == "test_hostile_input" and hasattr(item, "callspec")}
    jobs = []
    for case in (c for c in CASES if c.name in selected):
        scratch = tmp_path_factory.mktemp(case.name)
        argv = case.build(scratch)
        registry = scratch / "registry"
        jobs.append((case.name, scratch, argv, registry if registry.is_dir() else None))
    with ThreadPoolExecutor(WORKERS) as pool:
        done = pool.map(lambda job: (job[0], run_cli(job[1], job[2], job[3])), jobs)
        return dict(done)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, outcomes: dict[str, Outcome]) -> None:
    out = outcomes[case.name]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.rc == case.rc, f"rc {out.rc}\nstdout: {out.stdout[-2000:]}\nstderr: {out.stderr[-2000:]}"
    if case.rc == 2:
        lines = [ln for ln in out.stderr.splitlines() if ln.strip() and not ln.startswith("clbench: warning:")]
        assert len(lines) == 1 and lines[0].startswith("clbench: error: "), out.stderr[-2000:]
        assert re.search(case.match, lines[0]), lines[0]
    else:
        assert re.search(case.match, out.stdout + out.stderr), out.stdout[-3000:]
    stray = [f for f in out.new_files if not f.startswith(case.writes)]
    assert not stray, f"written outside {case.writes}: {stray}"


def test_every_class_of_the_issue_has_a_case() -> None:
    classes = {c.klass for c in CASES}
    for needed in ("non-finite weights", "non-finite metrics", "COCO/VOC boxes", "TruthfulQA label",
                   "YAML duplicate keys", "regress on nothing", "unknown names", "regress exit codes",
                   "ids and store paths", "record agrees with its path", "bounded reading",
                   "bounds before allocation", "unwritable dirs", "paths in data files", "decompression bombs",
                   "corrupt images", "binary headers", "image folders", "restricted unpickler",
                   "checkpoint allow-list", "corrupt checkpoints"):
        assert needed in classes, needed
    assert len({c.name for c in CASES}) == len(CASES)
