"""Released checkpoints of the seed methods: the loaders' module graph, the declared layouts, and
each ``baselines/<method>-<arch>`` file loading a state dict fabricated in its authors' exact
key layout (written from their code)."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from cl_bench.models import checkpoint, released_formats

PACKAGE = Path(checkpoint.__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside a function."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_released_formats_does_not_import_the_checkpoint_loader() -> None:
    """One direction only: checkpoint -> released_formats, never back (no import circle)."""
    assert "cl_bench.models.released_formats" in imported_modules(PACKAGE / "models" / "checkpoint.py")
    assert "cl_bench.models.checkpoint" not in imported_modules(PACKAGE / "models" / "released_formats.py")


def test_one_container_list_for_both_readers(tmp_path: Path) -> None:
    assert checkpoint.CONTAINER_KEYS is released_formats.CONTAINER_KEYS
    weights = {"conv.weight": torch.ones(2, 2)}
    path = tmp_path / "ckpt.pth"
    torch.save({"model_state_dict": weights, "epoch": 3}, path)  # the container the two used to disagree on
    assert set(checkpoint.read_state_dict(path)) == {"conv.weight"}
    assert released_formats.read_released(path).layout == "model_state_dict"
    assert set(released_formats.read_released_state_dict(path)) == {"conv.weight"}
