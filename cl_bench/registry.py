"""Finds task and method YAML files: the project's own ``tasks/`` and ``baselines/``,
directories named in ``$CLBENCH_REGISTRY_PATH`` (``os.pathsep``-separated, each holding
``tasks/`` and/or ``baselines/``), and directories contributed by installed plugins through
the entry-point group ``cl_bench.registry`` (an entry point whose object is a path).
Earlier roots win when two define the same id.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from pathlib import Path

from cl_bench.errors import ClBenchError
from cl_bench.specs import ArchRef, MethodSpec, TaskSpec, load_method, load_task
from cl_bench.suggest import did_you_mean

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def registry_roots() -> list[Path]:
    roots: list[Path] = []
    env = os.environ.get("CLBENCH_REGISTRY_PATH", "")
    roots += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    roots.append(PROJECT_ROOT)
    for ep in importlib.metadata.entry_points(group="cl_bench.registry"):
        roots.append(Path(str(ep.load())))
    return roots


class Registry:
    """The tasks and methods visible from a list of roots."""

    def __init__(self, roots: list[Path] | None = None) -> None:
        self.roots = roots if roots is not None else registry_roots()
        self._tasks = self._scan("tasks")
        self._methods = self._scan("baselines")

    def _scan(self, sub: str) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for root in self.roots:
            folder = root / sub
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.yaml")):
                if path.stem == "suites":
                    continue
                found.setdefault(path.stem, path)
        return found

    def task_ids(self) -> list[str]:
        return sorted(self._tasks)

    def method_ids(self) -> list[str]:
        return sorted(self._methods)

    def task_path(self, name: str) -> Path:
        return self._lookup(self._tasks, name, "task", "clbench list tasks")

    def method_path(self, name: str) -> Path:
        return self._lookup(self._methods, name, "method", "clbench list methods")

    def task(self, name: str) -> TaskSpec:
        return load_task(self.task_path(name))

    def method(self, name: str) -> MethodSpec:
        spec = load_method(self.method_path(name))
        check_same_setting(spec, self)
        return spec

    def tasks(self) -> list[TaskSpec]:
        return [self.task(n) for n in self.task_ids()]

    def methods(self) -> list[MethodSpec]:
        return [self.method(n) for n in self.method_ids()]

    @staticmethod
    def _lookup(table: dict[str, Path], name: str, kind: str, hint: str) -> Path:
        try:
            return table[name]
        except KeyError:
            raise ClBenchError(
                f"unknown {kind} '{name}'{did_you_mean(name, table)}; `{hint}` shows them all"
            ) from None


@functools.cache
def default_registry() -> Registry:
    return Registry()


def arch_matches(arch: ArchRef, allowed: list[ArchRef]) -> bool:
    """``arch`` is one of ``allowed``: same name and every param ``allowed`` lists is equal."""
    return any(arch.name == a.name and all(arch.params.get(k) == v for k, v in a.params.items()) for a in allowed)


def check_same_setting(method: MethodSpec, registry: Registry) -> None:
    """Refuse a reported number marked ``same_setting: true`` unless its task declares a setting whose
    protocol, data split and architecture are the paper's (see :class:`cl_bench.specs.TaskSetting`)."""
    for i, rep in enumerate(method.paper.reported if method.paper else []):
        if not rep.same_setting:
            continue
        where = f"{method.source}: paper.reported[{i}] ({rep.metric} {rep.value})"
        if rep.task is None:
            raise ClBenchError(f"{where}: same_setting: true needs the task that reproduces the setting (task: ID)")
        setting = registry.task(rep.task).setting
        if setting is None:
            raise ClBenchError(f"{where}: task '{rep.task}' declares no setting (setting: protocol, data, "
                               "architecture), so nothing shows it is the paper's; set same_setting: false")
        for field, want in (("protocol", setting.protocol), ("data", setting.data)):
            if getattr(rep, field) != want:
                raise ClBenchError(f"{where}: same_setting: true but its {field} {getattr(rep, field)!r} is not "
                                   f"task '{rep.task}''s {want!r}; state the paper's {field} or set same_setting: false")
        if not arch_matches(method.arch, setting.architecture):
            names = ", ".join(a.name + (f" {a.params}" if a.params else "") for a in setting.architecture)
            raise ClBenchError(f"{where}: same_setting: true but the method's arch {method.arch.name} "
                               f"{method.arch.params or ''} is not the setting's ({names}); set same_setting: false")
