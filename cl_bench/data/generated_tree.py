"""Generate an embedded dataset once into ``<cache>/generated/<kind>-<hash>/`` in a real layout.

The tree is written under a file lock into a temporary folder that is renamed at the end, so
concurrent runs generate it once and never read a half-written tree. The hash covers the
generator's parameters and version: changing either writes a new tree.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from cl_bench.cache import default_cache_dir
from cl_bench.specs import canonical_hash

MARKER = "generator.json"


def generated_tree(kind: str, params: dict[str, Any], version: str) -> Path:
    """Where the tree of ``kind`` generated with ``params`` by ``version`` lives."""
    key = canonical_hash({"kind": kind, "params": params, "version": version})
    return default_cache_dir() / "generated" / f"{kind}-{key[:16]}"


def ensure_tree(kind: str, params: dict[str, Any], version: str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` once (under a lock) unless the finished tree exists; return it."""
    final = generated_tree(kind, params, version)
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / MARKER).is_file():
            return final
        tmp = final.parent / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp)
        (tmp / MARKER).write_text(json.dumps({"kind": kind, "params": params, "version": version}, indent=2))
        tmp.rename(final)
    return final
