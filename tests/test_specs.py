from pathlib import Path

import pytest

from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from cl_bench.specs import load_method, load_task
from tests.conftest import write_tree


def test_every_shipped_spec_loads():
    reg = Registry()
    assert {"digits-linear", "digits-knn", "digits-hard-linear", "digits-hard-knn"} <= set(reg.task_ids())
    assert {"raw-pixels", "random", "supervised", "simclr", "dcl", "dclw"} <= set(reg.method_ids())
    for t in reg.tasks():
        assert t.primary_metric
    for m in reg.methods():
        assert m.provides


def _task(tmp_path: Path, body: str) -> Path:
    write_tree(tmp_path, {"tasks/t.yaml": body})
    return tmp_path / "tasks" / "t.yaml"


def test_unknown_field_names_file_and_field(tmp_path):
    path = _task(tmp_path, """
        id: t
        version: 1
        description: x
        dataset: {name: digits}
        protocol: {name: knn}
        primary_metric: top1
        primary_metrik: top5
    """)
    with pytest.raises(ClBenchError, match=r"t\.yaml: unknown field 'primary_metrik'"):
        load_task(path)


def test_wrong_type_names_field_and_expectation(tmp_path):
    path = _task(tmp_path, """
        id: t
        version: one
        description: x
        dataset: {name: digits}
        protocol: {name: knn}
        primary_metric: top1
    """)
    with pytest.raises(ClBenchError, match=r"t\.yaml: field 'version': .*integer.*'one'"):
        load_task(path)


def test_missing_field(tmp_path):
    path = _task(tmp_path, "id: t\nversion: 1\ndescription: x\ndataset: {name: digits}\nprimary_metric: top1\n")
    with pytest.raises(ClBenchError, match="missing required field 'protocol'"):
        load_task(path)


def test_invalid_yaml_and_non_mapping(tmp_path):
    path = _task(tmp_path, "id: [unclosed\n")
    with pytest.raises(ClBenchError, match="not valid YAML"):
        load_task(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(ClBenchError, match="expected a mapping"):
        load_task(path)


def test_yaml_is_loaded_safely(tmp_path):
    path = _task(tmp_path, "!!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ClBenchError):
        load_task(path)
    assert not (tmp_path / "pwned").exists()


def test_id_must_match_file_name(tmp_path):
    write_tree(tmp_path, {"baselines/m.yaml": "id: other\ndescription: x\nprovides: [image_encoder]\narch: {name: raw-pixels}\n"})
    with pytest.raises(ClBenchError, match="must equal the file name"):
        load_method(tmp_path / "baselines" / "m.yaml")


def test_unknown_capability(tmp_path):
    write_tree(tmp_path, {"baselines/m.yaml": "id: m\ndescription: x\nprovides: [telepathy]\narch: {name: raw-pixels}\n"})
    with pytest.raises(ClBenchError, match=r"field 'provides\.0'"):
        load_method(tmp_path / "baselines" / "m.yaml")


def test_spec_hash_ignores_prose_but_not_numbers(tiny_registry):
    t = tiny_registry.task("tiny-knn")
    same = t.model_copy(update={"description": "reworded", "changelog": {1: "x"}})
    assert same.spec_hash() == t.spec_hash()
    changed = t.model_copy(update={"protocol": t.protocol.model_copy(update={"params": {"k": 7}})})
    assert changed.spec_hash() != t.spec_hash()
