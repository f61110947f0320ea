"""``include:`` in task and method YAML (lm-evaluation-harness' loader semantics, plus a deep merge).

A spec file may start from other files::

    include: _base/contrastive-small-resnet.yaml     # or a list, applied in order
    id: dcl
    train: {objective: dcl, params: {temperature: 0.1}}

- paths are relative to the including file (or absolute); an included file may include others;
- an include cycle (a file including itself through any chain) is an error naming the chain;
  the same base reached twice through different branches is fine;
- merging: the includes are merged in order, then the file's own keys on top — later wins.
  Mappings merge key by key, recursively (so a variant restates only what differs, e.g.
  ``train.objective`` and ``train.params``); anything else (scalars, lists) is replaced whole,
  and so is a component reference (a mapping with a ``name``: ``arch``, ``dataset``,
  ``protocol``, ``train.data``) that names another component than the base's — the params of
  one component never leak into another's (a base may also give only ``params``, no ``name``);
  lm-evaluation-harness replaces top-level keys only; a deep merge is chosen here because task
  and method specs nest their settings (``train``, ``protocol.params``) one level down;
- the ``include`` key itself never reaches the spec: the spec (and its hash) is the resolved
  mapping, so a file restructured with ``include:`` keeps its spec hash exactly when it resolves
  to the same content.

Base files live where the registry does not scan them as specs (``tasks/_base/``,
``baselines/_base/``); they need not be complete specs themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cl_bench.errors import ClBenchError

INCLUDE_KEY = "include"


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merged key by key, everything else replaced; a
    component reference naming another component than the base's replaces it whole."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and not _names_another(value, old):
            out[key] = deep_merge(old, value)
        else:
            out[key] = value
    return out


def _names_another(value: dict[str, Any], old: dict[str, Any]) -> bool:
    """Both are component references (``name:``) and name different components."""
    return "name" in value and "name" in old and value["name"] != old["name"]


def load_with_includes(path: Path, read: Callable[[Path], Any], _chain: tuple[Path, ...] = ()) -> Any:
    """The YAML at ``path`` with its includes resolved (``read`` loads one file safely).

    A file that is not a mapping is returned as read (the spec parser reports it)."""
    path = Path(path)
    key = path.resolve()
    if key in _chain:
        cycle = " -> ".join(p.name for p in (*_chain[_chain.index(key):], key))
        raise ClBenchError(f"{path}: include cycle {cycle}; remove one of these includes")
    data = read(path)
    if not isinstance(data, dict) or INCLUDE_KEY not in data:
        return data
    own = dict(data)
    includes = own.pop(INCLUDE_KEY)
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not includes or not all(isinstance(i, str) and i for i in includes):
        raise ClBenchError(f"{path}: 'include' must be a file path or a list of file paths, got {includes!r}")
    merged: dict[str, Any] = {}
    for name in includes:
        target = Path(name) if Path(name).is_absolute() else path.parent / name
        if not target.is_file():
            raise ClBenchError(
                f"{path}: included file '{name}' not found (looked for {target}; paths are relative to the including file)"
            )
        base = load_with_includes(target, read, (*_chain, key))
        if not isinstance(base, dict):
            raise ClBenchError(f"{target}: an included file must be a mapping of fields, got {type(base).__name__}")
        merged = deep_merge(merged, base)
    return deep_merge(merged, own)


def direct_includes(path: Path, read: Callable[[Path], Any]) -> list[str]:
    """The files ``path`` includes itself, as written (for ``clbench show``)."""
    data = read(path)
    includes = data.get(INCLUDE_KEY) if isinstance(data, dict) else None
    if includes is None:
        return []
    return [includes] if isinstance(includes, str) else [str(i) for i in includes]
