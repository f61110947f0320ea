"""Named task lists (``tasks/suites.yaml``), usable wherever a task list is accepted.

A suite lists task ids explicitly and/or selects every task carrying all of some tags::

    embedded-fast:
      description: the CI gate
      tasks: [digits-linear, digits-knn]
    embedded-full:
      description: every embedded task
      tags: [embedded]
      exclude: [some-slow-task]
    language:
      description: any text or language task
      any_tags: [language, text]

``--tasks suite:embedded-fast,other-task`` expands to the suite's tasks followed by the
others, in order, without duplicates. Suites come from the ``tasks/suites.yaml`` of every
registry root; an earlier root wins when two define the same suite.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from cl_bench.specs import parse_model, read_yaml
from cl_bench.params import Strict
from cl_bench.suggest import did_you_mean

SUITE_PREFIX = "suite:"


class Suite(Strict):
    description: str
    tasks: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)  # every task carrying all of these tags
    any_tags: list[str] = Field(default_factory=list)  # every task carrying at least one of these
    exclude: list[str] = Field(default_factory=list)
    # a CI gate suite (gate-*): the methods .ci/gate re-runs on its tasks, and with how many seeds
    methods: list[str] = Field(default_factory=list)
    seeds: int = Field(default=3, ge=1)


def suite_files(registry: Registry) -> list[Path]:
    return [root / "tasks" / "suites.yaml" for root in registry.roots if (root / "tasks" / "suites.yaml").is_file()]


def load_suites(registry: Registry) -> dict[str, tuple[Suite, Path]]:
    """Every suite visible from the registry's roots, with the file defining it."""
    found: dict[str, tuple[Suite, Path]] = {}
    for path in suite_files(registry):
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ClBenchError(f"{path}: expected a mapping of suite name -> {{description, tasks, tags}}")
        for name, body in data.items():
            suite = parse_model(Suite, body, Path(f"{path}: suite '{name}'"))
            if not suite.tasks and not suite.tags and not suite.any_tags:
                raise ClBenchError(f"{path}: suite '{name}' lists neither tasks nor tags")
            found.setdefault(str(name), (suite, path))
    return found


def suite_tasks(registry: Registry, name: str) -> list[str]:
    """The task ids of suite ``name`` (explicit ones first, then tag matches, sorted)."""
    suites = load_suites(registry)
    if name not in suites:
        known = ", ".join(sorted(suites)) or "none defined"
        raise ClBenchError(f"unknown suite '{name}'{did_you_mean(name, suites)}; known suites: {known}")
    suite, path = suites[name]
    known_tasks = set(registry.task_ids())
    for t in suite.tasks + suite.exclude:
        if t not in known_tasks:
            raise ClBenchError(f"{path}: suite '{name}' names unknown task '{t}'{did_you_mean(t, known_tasks)}")
    out = list(dict.fromkeys(suite.tasks))
    if suite.tags or suite.any_tags:
        every, some = set(suite.tags), set(suite.any_tags)
        for spec in registry.tasks():
            have = set(spec.tags)
            if every <= have and (not some or some & have) and spec.id not in out:
                out.append(spec.id)
    out = [t for t in out if t not in set(suite.exclude)]
    if not out:
        raise ClBenchError(f"{path}: suite '{name}' selects no task")
    return out


def expand_tasks(registry: Registry, items: list[str]) -> list[str]:
    """Task ids and ``suite:NAME`` entries -> task ids, in order, without duplicates."""
    out: list[str] = []
    for item in items:
        if item.startswith(SUITE_PREFIX):
            out.extend(suite_tasks(registry, item[len(SUITE_PREFIX):]))
        else:
            registry.task_path(item)  # an unknown id is an error (with a suggestion), never a silent filter
            out.append(item)
    return list(dict.fromkeys(out))
