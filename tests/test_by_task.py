"""``by_task``: a method's per-task overrides of its arch and train recipe (a task-keyed budget)."""

from __future__ import annotations

import pytest

from cl_bench.errors import ClBenchError
from cl_bench.report.table import summarize
from cl_bench.specs import MethodSpec, canonical_hash
from cl_bench.store import write_result
from cl_bench.sweep import plan
from tests.conftest import write_tree
from tests.test_store_table import _record

BASE = {
    "id": "m", "description": "d", "provides": ["image_encoder"], "arch": {"name": "small-resnet"},
    "train": {"objective": "simclr", "epochs": 2, "batch_size": 8, "lr": 0.1,
              "params": {"temperature": 0.5, "curriculum": {"a": 1, "b": 2}}},
}


def test_the_override_reaches_its_task_only_and_merges_key_by_key() -> None:
    spec = MethodSpec.model_validate({**BASE, "by_task": {"t1": {"train": {"epochs": 9, "params": {"curriculum": {"b": 7}}}, "arch": {"params": {"width": 4}}}}})
    on_t1, on_t2 = spec.for_task("t1"), spec.for_task("t2")
    assert on_t1.train.epochs == 9 and on_t1.train.lr == 0.1
    assert on_t1.train.params == {"temperature": 0.5, "curriculum": {"a": 1, "b": 7}}
    assert on_t1.arch.name == "small-resnet" and on_t1.arch.params == {"width": 4}
    assert on_t2.train == MethodSpec.model_validate(BASE).train and on_t2.arch.params == {}
    assert not on_t1.by_task and not on_t2.by_task


def test_other_tasks_keep_the_hash_of_the_spec_without_the_section() -> None:
    plain = MethodSpec.model_validate(BASE)
    spec = MethodSpec.model_validate({**BASE, "by_task": {"t1": {"train": {"epochs": 9}}}})
    # the hash as it was computed before by_task existed: the dump without prose fields
    before = canonical_hash(plain.model_dump(mode="json", exclude={"description", "tags", "paper", "released",
                                                                    "by_task"}))
    assert plain.spec_hash() == before and plain.for_task("t1") is plain
    assert spec.for_task("t2").spec_hash() == before
    assert spec.for_task("t1").spec_hash() not in (before, spec.spec_hash())
    assert spec.spec_hash() != before  # the pin of the whole spec sees the section
    assert spec.for_task("t1").spec_hash() == MethodSpec.model_validate(
        {**BASE, "train": {**BASE["train"], "epochs": 9}}).spec_hash()


def test_a_bad_override_is_one_line_naming_it(tiny_root) -> None:
    from cl_bench.registry import Registry

    write_tree(tiny_root, {"baselines/tiny-bad.yaml": """
        id: tiny-bad
        description: d
        provides: [image_encoder]
        arch: {name: small-resnet}
        train: {objective: simclr, epochs: 1, batch_size: 8, lr: 0.1}
        by_task: {tiny-knn: {train: {batch_size: 1}}}
    """, "baselines/tiny-bad2.yaml": """
        id: tiny-bad2
        description: d
        provides: [image_encoder]
        arch: {name: small-resnet}
        by_task: {tiny-knn: {train: {epochs: 3}}}
    """})
    with pytest.raises(ClBenchError) as e:
        Registry().method("tiny-bad")
    assert "by_task.tiny-knn: batch_size" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ClBenchError, match="by_task.tiny-knn.train overrides a train recipe"):
        Registry().method("tiny-bad2")


def test_sweep_plans_and_table_compares_under_the_task_resolved_spec(tiny_root, tmp_path) -> None:
    from cl_bench.registry import Registry

    write_tree(tiny_root, {"baselines/tiny-tt.yaml": """
        id: tiny-tt
        description: d
        provides: [image_encoder]
        arch: {name: small-resnet, params: {width: 8}}
        train: {objective: simclr, epochs: 1, batch_size: 128, lr: 0.001}
        by_task: {tiny-knn: {train: {epochs: 3}}}
    """})
    reg = Registry()
    runs = {r.task.id: r for r in plan(reg, ["tiny-tt"], ["tiny-knn", "tiny-linear"], [0])}
    assert runs["tiny-knn"].method.train.epochs == 3 and runs["tiny-linear"].method.train.epochs == 1
    spec = reg.method("tiny-tt")
    for task_id, seed, stamp in [("tiny-knn", 0, spec.for_task("tiny-knn")), ("tiny-linear", 0, spec.for_task("tiny-linear")),
                                 ("tiny-knn", 1, spec.for_task("tiny-linear"))]:  # seed 1: the other task's recipe
        rec = _record(reg.task(task_id), "tiny-tt", seed, 40.0 + seed)
        write_result(tmp_path, rec.model_copy(update={"method_spec_hash": stamp.spec_hash()}))
    summary = summarize(tmp_path, reg)
    assert summary.cell("tiny-tt", "tiny-knn").n == 1 and summary.cell("tiny-tt", "tiny-linear").n == 1
    assert [(s.task, s.kind) for s in summary.stale] == [("tiny-knn", "stale")]


def test_committed_results_of_the_other_tasks_stay_comparable() -> None:
    """A method's by_task entry leaves its committed results on the other tasks current (e.g. the
    ICL models' icll-dfa results when icl-linreg got its own budget)."""
    from cl_bench.registry import PROJECT_ROOT, Registry
    from cl_bench.store import iter_results

    reg = Registry()
    with_entries = {m: reg.method(m) for m in reg.method_ids() if reg.method(m).by_task}
    assert with_entries  # the ICL models' icl-linreg budget
    checked = 0
    for _, rec in iter_results(PROJECT_ROOT / "results"):
        spec = with_entries.get(rec.method)
        if spec is not None and rec.task not in spec.by_task and rec.budget is None:
            assert rec.method_spec_hash == spec.for_task(rec.task).spec_hash() != spec.spec_hash(), (rec.method, rec.task)
            checked += 1
    assert checked >= 9  # icl-transformer, icl-lstm, icl-linear-rnn x icll-dfa x 3 seeds
