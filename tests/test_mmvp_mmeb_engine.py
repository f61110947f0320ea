"""scenes-mmvp and scenes-mmeb-mini end to end through the engine (registry -> data -> model ->
cached features -> protocol -> result record)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cl_bench import components
from cl_bench.engine import RunOptions, run
from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from tests.conftest import write_tree

SMALL = {
    "tasks/tiny-mmvp.yaml": """
        id: tiny-mmvp
        version: 1
        description: scenes-mmvp with 3 pairs per pattern (test fixture)
        dataset: {name: scenes-mmvp, params: {pairs_per_pattern: 3, train: {n_train: 64, n_test: 8}}}
        protocol: {name: mmvp_vlm}
        primary_metric: average
    """,
    "tasks/tiny-mmeb.yaml": """
        id: tiny-mmeb
        version: 1
        description: scenes-mmeb-mini with 5 queries and 4 candidates (test fixture)
        dataset: {name: scenes-mmeb-mini, params: {n_queries: 5, n_candidates: 4, train: {n_train: 64, n_test: 8}}}
        protocol: {name: mmeb}
        primary_metric: overall
    """,
    "baselines/tiny-scene-clip.yaml": """
        id: tiny-scene-clip
        description: untrained scene-clip (test fixture)
        provides: [image_text]
        arch: {name: scene-clip, params: {embed_dim: 16, image_width: 4, text_width: 16, text_layers: 0}}
    """,
    "baselines/tiny-clip.yaml": """
        id: tiny-clip
        description: scene-clip trained one epoch with the clip objective (test fixture)
        provides: [image_text]
        arch: {name: scene-clip, params: {embed_dim: 16, image_width: 4, text_width: 16, text_layers: 0}}
        train: {objective: clip, epochs: 1, batch_size: 32, lr: 0.001}
    """,
}


@pytest.fixture
def registry(tiny_root: Path) -> Registry:
    write_tree(tiny_root, SMALL)
    return Registry()


def test_mmvp_task_runs_and_reuses_cached_features(registry: Registry, tmp_path: Path) -> None:
    task, method = registry.task("tiny-mmvp"), registry.method("tiny-scene-clip")
    opts = RunOptions(results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu")
    first = run(task, method, opts)
    rec = first.record
    assert rec.primary_metric == "average" and set(rec.metrics) == {"average", "pairs", "statements"}
    assert len(rec.extras["per_pattern"]) == 6 and rec.extras["n_pairs"] == 18
    assert 0.0 <= rec.metrics["average"] <= 100.0 and first.path is not None and first.path.is_file()
    again = run(task, method, opts)
    assert again.feature_cache_hits == 2 and again.record.metrics == rec.metrics


def test_mmeb_task_runs(registry: Registry, tmp_path: Path) -> None:
    out = run(registry.task("tiny-mmeb"), registry.method("tiny-scene-clip"),
              RunOptions(results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu", write=False))
    m = out.record.metrics
    assert set(m) == {"overall", "classification", "vqa", "retrieval", "grounding", "ind", "ood"}
    assert len(out.record.extras["per_dataset"]) == 10
    assert m["overall"] == pytest.approx(sum(out.record.extras["per_dataset"].values()) / 10)


def test_real_tasks_need_the_data_root(registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLBENCH_DATA", raising=False)
    for task in ("mmeb", "mmvp-vlm"):
        with pytest.raises(ClBenchError, match="needs real data"):
            run(registry.task(task), registry.method("tiny-scene-clip"),
                RunOptions(results_dir=tmp_path / "r", cache_dir=tmp_path / "c", device="cpu", write=False))


def test_a_clip_method_trains_on_the_captions_and_is_reused_across_both_tasks(registry: Registry,
                                                                               tmp_path: Path) -> None:
    method = registry.method("tiny-clip")
    opts = RunOptions(results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", device="cpu", write=False)
    mmvp = run(registry.task("tiny-mmvp"), method, opts)
    assert mmvp.model.source == "trained" and not mmvp.model.reused
    captions = components.get("dataset", "scenes-captions")({"image_size": 64, "n_train": 64, "n_test": 8}, None)
    assert mmvp.model.card["train_data_fingerprint"] == captions.train.fingerprint  # learnt from the captions
    mmeb = run(registry.task("tiny-mmeb"), method, opts)  # same captions, same recipe: the cached weights
    assert mmeb.model.reused and mmeb.record.model_fingerprint == mmvp.record.model_fingerprint
