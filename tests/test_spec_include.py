"""YAML ``include:`` for task and method specs: paths relative to the including file, later
includes and local keys win, mappings merge deeply (a component reference naming another
component is replaced whole), cycles are errors and diamonds are not, the spec and its hash are
the resolved ones, base files are not specs, ``clbench show`` prints the resolved spec."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from cl_bench.spec_include import deep_merge, load_with_includes
from cl_bench.specs import MethodSpec, load_method, load_task, read_yaml

RECIPE = """
provides: [image_encoder]
arch: {name: small-resnet, params: {width: 32}}
train:
  objective: simclr
  params: {temperature: 0.5}
  epochs: 80
  batch_size: 64
  lr: 0.002
  augment: {crop_scale: [0.2, 1.0]}
"""


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_local_keys_win_and_mappings_merge_deeply(tmp_path: Path) -> None:
    write(tmp_path, "baselines/_base/recipe.yaml", RECIPE)
    path = write(tmp_path, "baselines/dcl.yaml", """
        include: _base/recipe.yaml
        id: dcl
        description: variant
        train:
          objective: dcl
          params: {sigma: 0.5}
          augment: {crop_scale: [0.5, 1.0]}
    """)
    spec = load_method(path)
    assert spec.id == "dcl" and spec.arch.params == {"width": 32}
    assert spec.train.objective == "dcl" and spec.train.epochs == 80
    assert spec.train.params == {"temperature": 0.5, "sigma": 0.5}  # merged key by key
    assert spec.train.augment == {"crop_scale": [0.5, 1.0]}  # a list is replaced, not merged
    written_out = MethodSpec.model_validate({**yaml.safe_load(RECIPE), "id": "dcl", "description": "other prose",
                                             "train": {**yaml.safe_load(RECIPE)["train"], "objective": "dcl",
                                                       "params": {"temperature": 0.5, "sigma": 0.5},
                                                       "augment": {"crop_scale": [0.5, 1.0]}}})
    assert spec.spec_hash() == written_out.spec_hash()  # the hash is taken over the resolved spec


def test_a_component_naming_another_component_is_replaced_whole() -> None:
    base = {"arch": {"name": "small-resnet", "params": {"width": 32}}, "train": {"data": {"name": "a", "params": {"n": 1}}}}
    over = {"arch": {"name": "with-fpn", "params": {"levels": 3}}, "train": {"data": {"params": {"seed": 2}}}}
    merged = deep_merge(base, over)
    assert merged["arch"] == {"name": "with-fpn", "params": {"levels": 3}}  # no 'width' leaking in
    assert merged["train"]["data"] == {"name": "a", "params": {"n": 1, "seed": 2}}  # same component: merged
    assert base["arch"]["params"] == {"width": 32}  # inputs untouched


def test_paths_are_relative_to_the_including_file_and_later_includes_win(tmp_path: Path) -> None:
    write(tmp_path, "shared/optim.yaml", "train: {optimizer: sgd, lr: 0.1, epochs: 5, batch_size: 8, objective: simclr}\n")
    write(tmp_path, "baselines/_base/recipe.yaml", "include: ../../shared/optim.yaml\n" + RECIPE)
    write(tmp_path, "baselines/_base/faster.yaml", "train: {lr: 0.01}\n")
    path = write(tmp_path, "baselines/m.yaml", """
        include: [_base/recipe.yaml, _base/faster.yaml]
        id: m
        description: m
    """)
    spec = load_method(path)
    assert spec.train.optimizer == "sgd"  # from the base's own include
    assert spec.train.epochs == 80  # the base's keys win over what it includes
    assert spec.train.lr == 0.01  # the later include wins


def test_a_task_can_include_its_twin(tmp_path: Path) -> None:
    write(tmp_path, "tasks/a.yaml", """
        id: a
        version: 1
        description: a
        dataset: {name: digits}
        protocol: {name: knn, params: {k: 20, temperature: 0.07}}
        primary_metric: top1
    """)
    path = write(tmp_path, "tasks/b.yaml", "include: a.yaml\nid: b\nprotocol: {params: {k: 5}}\n")
    task = load_task(path)
    assert task.id == "b" and task.protocol.params == {"k": 5, "temperature": 0.07}


@pytest.mark.parametrize("files, message", [
    ({"a.yaml": "include: a.yaml\nid: a\n"}, "include cycle a.yaml -> a.yaml"),
    ({"a.yaml": "include: b.yaml\nid: a\n", "b.yaml": "include: a.yaml\n"}, "include cycle a.yaml -> b.yaml -> a.yaml"),
    ({"a.yaml": "include: nope.yaml\nid: a\n"}, "included file 'nope.yaml' not found"),
    ({"a.yaml": "include: {x: 1}\nid: a\n"}, "'include' must be a file path or a list"),
    ({"a.yaml": "include: b.yaml\nid: a\n", "b.yaml": "- 1\n- 2\n"}, "must be a mapping"),
])
def test_bad_includes_are_one_line_errors(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        write(tmp_path, f"tasks/{name}", text)
    with pytest.raises(ClBenchError, match=message) as e:
        load_task(tmp_path / "tasks" / "a.yaml")
    assert "\n" not in str(e.value)


def test_the_same_base_through_two_branches_is_not_a_cycle(tmp_path: Path) -> None:
    write(tmp_path, "d.yaml", "x: 1\ny: {a: 1}\n")
    write(tmp_path, "b.yaml", "include: d.yaml\ny: {b: 2}\n")
    write(tmp_path, "c.yaml", "include: d.yaml\ny: {c: 3}\n")
    path = write(tmp_path, "a.yaml", "include: [b.yaml, c.yaml]\n")
    assert load_with_includes(path, read_yaml) == {"x": 1, "y": {"a": 1, "b": 2, "c": 3}}


def test_base_files_are_not_specs(tmp_path: Path) -> None:
    write(tmp_path, "baselines/_base/recipe.yaml", RECIPE)
    write(tmp_path, "baselines/_hidden.yaml", RECIPE)
    write(tmp_path, "baselines/m.yaml", "include: _base/recipe.yaml\nid: m\ndescription: m\n")
    assert Registry([tmp_path]).method_ids() == ["m"]


def test_the_project_keeps_its_bases_out_of_the_registry() -> None:
    registry = Registry()
    root = Path(__file__).resolve().parent.parent
    for kind, ids, path_of in (("tasks", registry.task_ids(), registry.task_path),
                               ("baselines", registry.method_ids(), registry.method_path)):
        assert list((root / kind / "_base").glob("*.yaml")), kind
        assert all(path_of(i).parent == root / kind for i in ids), kind


def test_show_prints_the_resolved_spec_and_its_includes(tmp_path: Path) -> None:
    write(tmp_path, "baselines/_base/recipe.yaml", RECIPE)
    write(tmp_path, "baselines/m.yaml", "include: _base/recipe.yaml\nid: m\ndescription: m\ntrain: {lr: 0.5}\n")
    env = {"CLBENCH_REGISTRY_PATH": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parent.parent)}
    out = subprocess.run([sys.executable, "-m", "cl_bench.cli", "show", "m"], capture_output=True, text=True, env=env,
                         check=True).stdout
    assert "# includes: _base/recipe.yaml" in out
    shown = yaml.safe_load(out)
    assert shown["train"]["lr"] == 0.5 and shown["train"]["epochs"] == 80 and "include" not in shown
