"""Registry of named components that task and method YAML files refer to.

Four kinds, each living in its own subpackage:

- ``dataset``   (``cl_bench.data``):      name -> loader(params, data_root) -> dataset object
- ``protocol``  (``cl_bench.protocols``): name -> Protocol (evaluation function + what it needs)
- ``objective`` (``cl_bench.methods``):   name -> Objective class (a training loss)
- ``arch``      (``cl_bench.models``):    name -> builder(params, in_channels) -> nn.Module

Every component is declared one way: ``register(kind, name, params=Model)`` (as a decorator, or
``register(...)(obj)`` for an object made by a factory). ``Model`` (a :class:`cl_bench.params.Strict`, the one
strict base) is the component's parameter model: the registry validates the YAML params against
it and hands the component the typed object — a dataset loader is called as
``loader(params: Model, data_root)``, an arch builder as ``builder(params: Model, ...)``, while
callers keep passing the plain dict; a protocol object takes its ``name`` and ``params`` from
its registration; an objective class validates ``train.params`` into its registered model. The name exists only in the registration. The
sources of the kind's subpackage are parsed (not imported) to find which module registers
which name, and only that module is imported on lookup — so adding a component never means
editing a central list, and using one never imports the heavy libraries of the others. Third-party packages add components through the entry-point group
``cl_bench.<kind>`` (the entry point's object is registered under its name).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
import pkgutil
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from cl_bench.errors import ClBenchError
from cl_bench.params import validate_params
from cl_bench.suggest import did_you_mean

KINDS: dict[str, str] = {
    "dataset": "cl_bench.data",
    "protocol": "cl_bench.protocols",
    "objective": "cl_bench.methods",
    "arch": "cl_bench.models",
}

_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
_LOADED: set[str] = set()
_INDEX: dict[str, dict[str, str]] = {}

T = TypeVar("T")


def register(kind: str, name: str, params: type[BaseModel] | None = None) -> Callable[[T], T]:
    """Decorator: register ``obj`` as component ``name`` of ``kind``, with parameter model ``params``.

    With ``params``, a function component (dataset loader, arch builder) is registered as a
    wrapper that validates its first argument (a dict, or None for all defaults) into ``params``
    and calls the function with the typed object (an instance of ``params`` passes through);
    the wrapper is what the decorator returns. A component object with ``name`` and ``params``
    fields (a protocol) gets both from here; a class (an objective) gets ``params_model`` and
    ``<kind>_name`` and validates its params into the model when it is built.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}")

    def deco(obj: T) -> T:
        if params is not None:
            obj = _typed(kind, name, params, obj)
        existing = _REGISTRY[kind].get(name)
        if existing is not None and existing is not obj:
            raise ValueError(f"{kind} {name!r} registered twice")
        _REGISTRY[kind][name] = obj
        return obj

    return deco


def _typed(kind: str, name: str, model: type[BaseModel], obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, name=name, params=model)  # type: ignore[type-var]
    if isinstance(obj, type):  # a class (an objective): it validates into params_model when built
        obj.params_model = model  # type: ignore[attr-defined]
        setattr(obj, f"{kind}_name", name)
        return obj
    if not callable(obj):
        raise ValueError(f"{kind} {name!r}: params= takes a function, a class or a dataclass component, not {obj!r}")
    where = f"{kind} '{name}' params"

    @functools.wraps(obj)
    def validated(params: Any = None, *args: Any, **kwargs: Any) -> Any:
        typed = params if isinstance(params, model) else validate_params(model, params, where)
        return obj(typed, *args, **kwargs)

    validated.params_model = model  # type: ignore[attr-defined]
    return validated


def _static_index(kind: str) -> dict[str, str]:
    """name -> module for every ``register("<kind>", "<name>")`` call with literal arguments
    in the kind's subpackage, found by parsing the sources (no imports, so looking up one
    component never pays for importing every heavy library the others use)."""
    index = _INDEX.get(kind)
    if index is not None:
        return index
    index = {}
    package = importlib.import_module(KINDS[kind])
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        spec = importlib.util.find_spec(info.name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        try:
            tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        except (OSError, SyntaxError):
            continue
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "register"
                and len(node.args) >= 2
            ):
                continue
            first, second = node.args[0], node.args[1]
            if (isinstance(first, ast.Constant) and first.value == kind
                    and isinstance(second, ast.Constant) and isinstance(second.value, str)):
                index.setdefault(second.value, info.name)
    _INDEX[kind] = index
    return index


def _load_entry_points(kind: str) -> None:
    if kind in _LOADED:
        return
    _LOADED.add(kind)
    for ep in importlib.metadata.entry_points(group=f"cl_bench.{kind}"):
        _REGISTRY[kind].setdefault(ep.name, ep.load())


def _load_all(kind: str) -> None:
    """Import every module of the kind's subpackage (for registrations the index can't see)."""
    package = importlib.import_module(KINDS[kind])
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)


def get(kind: str, name: str) -> Any:
    """Look up a component; unknown names raise ClBenchError with a suggestion."""
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}")
    if name not in _REGISTRY[kind]:
        module = _static_index(kind).get(name)
        if module is not None:
            importlib.import_module(module)
        else:
            _load_entry_points(kind)
            if name not in _REGISTRY[kind]:
                _load_all(kind)
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        known = set(_REGISTRY[kind]) | set(_static_index(kind))
        raise ClBenchError(
            f"unknown {kind} {name!r}{did_you_mean(name, known)}; known: {', '.join(sorted(known))}"
        ) from None


def names(kind: str) -> list[str]:
    """Every registered name of ``kind`` (statically indexed, plus plugins), without importing."""
    _load_entry_points(kind)
    return sorted(set(_static_index(kind)) | set(_REGISTRY[kind]))
