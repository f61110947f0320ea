"""Shared fixtures: a throw-away registry root with tiny-budget tasks and methods."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from cl_bench.registry import PROJECT_ROOT, Registry

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

torch.set_num_threads(1)

TINY = {
    "tasks/tiny-linear.yaml": """
        id: tiny-linear
        version: 1
        description: linear probe on plain digits (test fixture)
        dataset: {name: digits}
        protocol: {name: linear_probe, params: {l2_grid: [0.0001, 0.01]}}
        primary_metric: top1
    """,
    "tasks/tiny-knn.yaml": """
        id: tiny-knn
        version: 1
        description: kNN on plain digits (test fixture)
        dataset: {name: digits}
        protocol: {name: knn, params: {k: 5}}
        primary_metric: top1
    """,
    "baselines/tiny-simclr.yaml": """
        id: tiny-simclr
        description: one-epoch SimCLR (test fixture)
        provides: [image_encoder]
        arch: {name: small-resnet, params: {width: 8}}
        train: {objective: simclr, epochs: 1, batch_size: 128, lr: 0.001}
    """,
    "baselines/tiny-random.yaml": """
        id: tiny-random
        description: untrained small-resnet (test fixture)
        provides: [image_encoder]
        arch: {name: small-resnet, params: {width: 8}}
    """,
    "baselines/tiny-lm-stub.yaml": """
        id: tiny-lm-stub
        description: a method that provides only a causal LM (test fixture)
        provides: [causal_lm]
        arch: {name: raw-pixels}
    """,
}


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())


@pytest.fixture
def tiny_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry root with the TINY specs, put first on CLBENCH_REGISTRY_PATH; cache in tmp."""
    root = tmp_path / "registry"
    write_tree(root, TINY)
    monkeypatch.setenv("CLBENCH_REGISTRY_PATH", str(root))
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return root


@pytest.fixture
def tiny_registry(tiny_root: Path) -> Registry:
    return Registry()
