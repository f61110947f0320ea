"""End-to-end runs through the engine with one-epoch budgets."""

import json

import torch
from safetensors.torch import save_file

from cl_bench.engine import RunOptions, run
from cl_bench.models.weights.fingerprint import model_fingerprint
from cl_bench.specs import ResultRecord


def _opts(tmp_path, **kw):
    return RunOptions(results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", **kw)


def test_run_writes_a_full_record_and_reuses_cache(tiny_registry, tmp_path):
    task, method = tiny_registry.task("tiny-linear"), tiny_registry.method("tiny-simclr")
    first = run(task, method, _opts(tmp_path, seed=3))
    assert first.path == tmp_path / "results" / "tiny-simclr" / "tiny-linear" / "seed3.json"
    rec = ResultRecord.model_validate(json.loads(first.path.read_text()))
    assert rec.seed == 3 and rec.task_spec_hash == task.spec_hash() and rec.method_spec_hash == method.spec_hash()
    assert rec.model_source == "trained" and rec.recipe_hash
    assert rec.model_fingerprint == model_fingerprint(first.model.model)
    assert 0 <= rec.metrics["top1"] <= 100 and rec.metrics["top5"] >= rec.metrics["top1"]
    assert rec.primary_metric == "top1" and rec.timings.train_s > 0
    assert {"torch", "numpy", "scikit-learn"} <= set(rec.libraries)
    assert first.feature_cache_misses == 2 and not first.model.reused

    second = run(task, method, _opts(tmp_path, seed=3))
    assert second.model.reused and second.feature_cache_hits == 2 and second.feature_cache_misses == 0
    assert second.record.model_fingerprint == rec.model_fingerprint
    assert second.record.metrics == rec.metrics
    assert second.record.timings.train_s == 0

    knn = run(tiny_registry.task("tiny-knn"), method, _opts(tmp_path, seed=3))
    assert knn.model.reused  # same training data and recipe: the checkpoint is shared


def test_same_seed_same_numbers_in_a_fresh_cache(tiny_registry, tmp_path):
    task, method = tiny_registry.task("tiny-linear"), tiny_registry.method("tiny-simclr")
    a = run(task, method, RunOptions(seed=1, results_dir=tmp_path / "a", cache_dir=tmp_path / "ca"))
    b = run(task, method, RunOptions(seed=1, results_dir=tmp_path / "b", cache_dir=tmp_path / "cb"))
    assert a.record.model_fingerprint == b.record.model_fingerprint
    assert a.record.metrics == b.record.metrics
    c = run(task, method, RunOptions(seed=2, results_dir=tmp_path / "b", cache_dir=tmp_path / "cb"))
    assert c.record.model_fingerprint != a.record.model_fingerprint


def test_checkpoint_option_loads_a_prefixed_state_dict(tiny_registry, tmp_path):
    task, method = tiny_registry.task("tiny-knn"), tiny_registry.method("tiny-random")
    base = run(task, method, _opts(tmp_path, seed=5))
    assert base.record.model_source == "untrained"
    state = {f"backbone.{k}": v.clone() for k, v in base.model.model.state_dict().items()}
    state["head.weight"] = torch.zeros(3, 3)
    ckpt = tmp_path / "mine.safetensors"
    save_file(state, str(ckpt))
    loaded = run(task, method, _opts(tmp_path, seed=0, checkpoint=ckpt))
    rec = loaded.record
    assert rec.model_source == "checkpoint"
    assert rec.model_fingerprint == base.record.model_fingerprint  # every weight landed
    assert rec.metrics == base.record.metrics
    assert "head.weight" in rec.checkpoint["dropped"]


def test_parameter_free_model_has_a_fingerprint(tiny_registry, tmp_path):
    rec = run(tiny_registry.task("tiny-knn"), tiny_registry.method("raw-pixels"), _opts(tmp_path)).record
    assert rec.model_source == "parameter-free" and len(rec.model_fingerprint) == 64
    assert rec.metrics["top1"] > 90  # plain digits are easy for raw pixels
