"""Named task lists: tasks/suites.yaml and `suite:NAME` wherever a task list is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from cl_bench.cli import main
from cl_bench.errors import ClBenchError
from cl_bench.registry import PROJECT_ROOT, Registry
from cl_bench.store import write_result
from cl_bench.suites import expand_tasks, load_suites, suite_tasks
from tests.conftest import write_tree
from tests.record_helpers import make_record

SUITES = {
    "tasks/tagged-a.yaml": """
        id: tagged-a
        version: 1
        description: tagged task (test fixture)
        dataset: {name: digits}
        protocol: {name: knn, params: {k: 3}}
        primary_metric: top1
        tags: [fixture, fast]
    """,
    "tasks/tagged-b.yaml": """
        id: tagged-b
        version: 1
        description: tagged task (test fixture)
        dataset: {name: digits}
        protocol: {name: knn, params: {k: 7}}
        primary_metric: top1
        tags: [fixture]
    """,
    "tasks/suites.yaml": """
        tiny:
          description: the fixture tasks
          tasks: [tiny-knn, tiny-linear]
        by-tag:
          description: every fixture-tagged task but one
          tasks: [tiny-knn]
          tags: [fixture]
          exclude: [tagged-b]
        either:
          description: any of two tags
          any_tags: [fast, nothing]
        embedded-fast:
          description: overrides the project's suite of the same name (earlier root wins)
          tasks: [tiny-knn]
    """,
}


@pytest.fixture
def suite_root(tiny_root: Path) -> Path:
    write_tree(tiny_root, SUITES)
    return tiny_root


def test_explicit_tags_exclude_and_order(suite_root: Path) -> None:
    reg = Registry()
    assert suite_tasks(reg, "tiny") == ["tiny-knn", "tiny-linear"]
    assert suite_tasks(reg, "by-tag") == ["tiny-knn", "tagged-a"]
    assert suite_tasks(reg, "either") == ["tagged-a"]
    assert expand_tasks(reg, ["tagged-b", "suite:tiny", "tiny-knn", "suite:by-tag"]) == [
        "tagged-b", "tiny-knn", "tiny-linear", "tagged-a"]
    assert suite_tasks(reg, "embedded-fast") == ["tiny-knn"]  # the fixture root comes first
    suites = load_suites(reg)
    assert suites["embedded-full"][1] == PROJECT_ROOT / "tasks" / "suites.yaml"
    assert "suites" not in reg.task_ids()  # the suites file is not a task


def test_errors_name_the_problem(suite_root: Path) -> None:
    reg = Registry()
    with pytest.raises(ClBenchError, match=r"unknown suite 'tinny' \(did you mean 'tiny'"):
        expand_tasks(reg, ["suite:tinny"])
    write_tree(suite_root, {"tasks/suites.yaml": """
        bad: {description: x, tasks: [tiny-knnn]}
        empty: {description: x, tags: [no-such-tag]}
        neither: {description: x}
    """})
    with pytest.raises(ClBenchError, match=r"suites.yaml: suite 'neither' lists neither tasks nor tags"):
        load_suites(reg)
    write_tree(suite_root, {"tasks/suites.yaml": """
        bad: {description: x, tasks: [tiny-knnn]}
        empty: {description: x, tags: [no-such-tag]}
        typo: {description: x, task: [tiny-knn]}
    """})
    with pytest.raises(ClBenchError, match=r"suite 'typo'.*unknown field 'task'"):
        load_suites(reg)
    write_tree(suite_root, {"tasks/suites.yaml": """
        bad: {description: x, tasks: [tiny-knnn]}
        empty: {description: x, tags: [no-such-tag]}
    """})
    with pytest.raises(ClBenchError, match=r"suite 'bad' names unknown task 'tiny-knnn' \(did you mean 'tiny-knn'"):
        suite_tasks(reg, "bad")
    with pytest.raises(ClBenchError, match="suite 'empty' selects no task"):
        suite_tasks(reg, "empty")
    assert main(["table", "--tasks", "suite:nope"]) == 2


def test_project_suites_name_existing_tasks() -> None:
    reg = Registry([PROJECT_ROOT])
    fast = suite_tasks(reg, "embedded-fast")
    full = suite_tasks(reg, "embedded-full")
    assert fast and set(fast) <= set(full) <= set(reg.task_ids())
    assert all("embedded" in reg.task(t).tags for t in full)


def test_suites_in_table_and_sweep_dry_run(suite_root: Path, tmp_path: Path, capsys) -> None:
    reg = Registry()
    res = tmp_path / "res"
    for task in ("tiny-knn", "tiny-linear", "tagged-a"):
        write_result(res, make_record(reg.task(task), "m", 0, 50.0))
    assert main(["table", "--results-dir", str(res), "--tasks", "suite:tiny", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "m,tiny-knn," in out and "m,tiny-linear," in out and "tagged-a" not in out
    assert main(["sweep", "--methods", "raw-pixels", "--tasks", "suite:by-tag", "--dry-run",
                 "--results-dir", str(res)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines[:-1]] == ["run", "run"]
    assert "raw-pixels × tiny-knn × seed 0" in lines[0] and "raw-pixels × tagged-a × seed 0" in lines[1]
