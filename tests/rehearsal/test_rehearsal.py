"""Every real task spec, rehearsed end to end with ``--smoke`` on miniature trees in the official
layouts, through the method a user would use and a checkpoint in the official layout; each
result is checked for the facts that show the real pipeline ran (``cases.py``).

A real task with no case fails ``test_every_real_task_is_rehearsed``: adding a task that needs
``--data-root`` means adding its case. The dense cases (a detector / segmenter at 800 px) are
marked slow; they run in CI like the rest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rehearsal.cases import CASES, Case, real_task_ids
from tests.rehearsal.run import Setup, prepare, run_case

SLOW = {"voc07-det-c4", "coco-det-c4-1x", "coco-det-fpn-1x", "cityscapes-seg-fcn", "ade20k-seg-fcn",
        "ade20k-seg-denseclip"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return prepare(Path(tmp_path_factory.mktemp("rehearsal")))


def test_every_real_task_is_rehearsed() -> None:
    real = set(real_task_ids())
    cased = [c.task for c in CASES]
    assert len(cased) == len(set(cased)), "one case per task"
    assert real - set(cased) == set(), f"real tasks without a rehearsal case: {sorted(real - set(cased))}"
    assert set(cased) - real == set(), f"cases for tasks that do not need --data-root: {sorted(set(cased) - real)}"
    assert {"voc07-det-c4", "mmeb", "truthfulqa-mc1", "tatoeba-bitext", "icl-fewshot-rte"} <= real


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.task, marks=[pytest.mark.slow] if c.task in SLOW else []) for c in CASES])
def test_smoke_rehearsal(case: Case, setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLBENCH_DATA", raising=False)
    row = run_case(case, setup)
    assert row.record.task == case.task and row.record.method == case.method
