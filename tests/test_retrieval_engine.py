"""End to end through the engine: a tiny scene-clip trained with the clip objective, evaluated by
zero_shot and retrieval on tiny scenes-captions tasks (one trained model shared by both)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cl_bench.engine import RunOptions, run
from cl_bench.registry import PROJECT_ROOT
from cl_bench.spec_include import load_with_includes
from cl_bench.specs import MethodSpec, TaskSpec, read_yaml

SCENES = {"n_train": 48, "n_test": 24, "image_size": 32, "captions_per_image": 3, "seed": 0}


def task(path: str, **changes: object) -> TaskSpec:
    """A shipped task with smaller data (so the test is the real YAML, minus its size)."""
    spec = load_with_includes(PROJECT_ROOT / "tasks" / path, read_yaml)
    spec["dataset"]["params"] = SCENES
    spec.update(changes)
    return TaskSpec.model_validate(spec)


def tiny_clip() -> MethodSpec:
    """baselines/clip.yaml when it exists (objective, arch name), with a tiny arch and budget."""
    path = PROJECT_ROOT / "baselines" / "clip.yaml"
    spec = load_with_includes(path, read_yaml) if path.is_file() else {
        "id": "clip", "description": "clip", "provides": ["image_text"], "arch": {"name": "scene-clip"},
        "train": {"objective": "clip", "epochs": 1, "batch_size": 16, "lr": 0.003}}
    spec["arch"]["params"] = {"embed_dim": 8, "image_width": 4, "text_width": 16, "text_heads": 2, "text_layers": 1}
    spec["train"].update({"epochs": 2, "batch_size": 16})
    spec["train"].pop("data", None)
    spec.pop("paper", None)
    return MethodSpec.model_validate(spec)


def test_clip_zero_shot_and_retrieval_through_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path / "cache"))
    opts = RunOptions(seed=0, device="cpu", cache_dir=tmp_path / "cache", results_dir=tmp_path / "results")
    method = tiny_clip()
    zs = run(task("scenes-zeroshot.yaml"), method, opts)
    m = zs.record.metrics
    assert set(m) == {"top1", "top5", "mean_per_class_recall"}
    assert 0 <= m["top1"] <= m["top5"] <= 100
    assert zs.record.model_source == "trained" and zs.path is not None and zs.path.is_file()
    assert zs.record.extras["n_templates"] == 5 and len(zs.record.extras["per_class_top1"]) <= 6

    ret = run(task("scenes-retrieval.yaml"), method, opts)
    r = ret.record.metrics
    assert ret.model.reused  # the same train split: the model trained for zero-shot is reused
    assert ret.record.model_fingerprint == zs.record.model_fingerprint
    for d in ("i2t", "t2i"):
        assert 0 <= r[f"{d}_r1"] <= r[f"{d}_r5"] <= r[f"{d}_r10"] <= 100
    assert r["rsum"] == pytest.approx(sum(r[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)))
    assert ret.record.extras["n_images"] == 24 and ret.record.extras["n_captions"] == 72
    again = run(task("scenes-retrieval.yaml"), method, opts)  # features come from the cache
    assert again.feature_cache_hits == 2 and again.record.metrics == r
