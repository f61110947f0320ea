"""Where a real dataset's files are: the ``--data-root`` (``CLBENCH_DATA``) a reader needs."""

from __future__ import annotations

from pathlib import Path

from cl_bench.errors import ClBenchError


def need_root(data_root: Path | None, name: str, layout: str) -> Path:
    """``data_root`` as a Path, or ClBenchError saying that dataset ``name`` needs it (and its layout)."""
    if data_root is None:
        raise ClBenchError(f"dataset '{name}' needs real data: pass --data-root (or set CLBENCH_DATA); {layout}")
    return Path(data_root)
