import pytest

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry


def test_unknown_task_suggests(tiny_registry):
    with pytest.raises(ClBenchError, match=r"unknown task 'digits-hard-linaer' \(did you mean 'digits-hard-linear'"):
        tiny_registry.task("digits-hard-linaer")


def test_unknown_method_suggests(tiny_registry):
    with pytest.raises(ClBenchError, match=r"unknown method 'simclrr' \(did you mean 'simclr'"):
        tiny_registry.method("simclrr")


def test_env_roots_come_first_and_project_roots_are_visible(tiny_registry):
    assert "tiny-linear" in tiny_registry.task_ids()
    assert "digits-linear" in tiny_registry.task_ids()


def test_extra_root_overrides_project_spec(tmp_path):
    from tests.conftest import write_tree

    write_tree(tmp_path, {"baselines/simclr.yaml": "id: simclr\ndescription: mine\nprovides: [image_encoder]\narch: {name: raw-pixels}\n"})
    reg = Registry([tmp_path, *Registry().roots])
    assert reg.method("simclr").description == "mine"


def test_components_are_found_without_a_central_list():
    assert {"digits", "digits-hard", "mnist", "imagefolder"} <= set(components.names("dataset"))
    assert {"linear_probe", "knn"} <= set(components.names("protocol"))
    assert {"simclr", "dcl", "dclw", "supervised"} <= set(components.names("objective"))
    assert {"small-resnet", "resnet18", "resnet50", "raw-pixels"} <= set(components.names("arch"))
    with pytest.raises(ClBenchError, match="did you mean 'linear_probe'"):
        components.get("protocol", "linear_prob")
