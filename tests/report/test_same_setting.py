"""same_setting claims: a reported number may carry ``same_setting: true`` only when its task
declares a setting (protocol, data split, architecture) that the number and the method match;
the leaderboard shows a delta only then. The project's own baselines all pass the check."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from cl_bench.report.leaderboard import ReportedRow
from cl_bench.report.table import Cell

TASK = """
id: paper-task
version: 1
description: a task that reproduces a paper setting (fixture)
dataset: {name: digits}
protocol: {name: knn}
primary_metric: top1
setting:
  protocol: MoCo main_lincls
  data: ImageNet-1K train -> val
  architecture: [{name: resnet50}, {name: small-resnet, params: {width: 64}}]
"""
PLAIN_TASK = """
id: plain-task
version: 1
description: a task with no declared setting (fixture)
dataset: {name: digits}
protocol: {name: knn}
primary_metric: top1
"""


def method(arch: str, **rep: object) -> str:
    fields = {"metric": "top1", "value": 70.0, "setting": "R50", "source": "arXiv 0000.00000", **rep}
    inline = ", ".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {str(v).lower()}" for k, v in fields.items())
    return textwrap.dedent(f"""
        id: m
        description: fixture
        provides: [image_encoder]
        arch: {arch}
        paper:
          title: t
          reported:
            - {{{inline}}}
    """)


def registry(tmp_path: Path, method_yaml: str) -> Registry:
    (tmp_path / "tasks").mkdir(parents=True, exist_ok=True)
    (tmp_path / "baselines").mkdir(parents=True, exist_ok=True)
    (tmp_path / "tasks" / "paper-task.yaml").write_text(TASK)
    (tmp_path / "tasks" / "plain-task.yaml").write_text(PLAIN_TASK)
    (tmp_path / "baselines" / "m.yaml").write_text(method_yaml)
    return Registry([tmp_path])


OK = {"task": "paper-task", "same_setting": True, "protocol": "MoCo main_lincls", "data": "ImageNet-1K train -> val"}


def test_a_claim_that_matches_protocol_data_and_arch_loads(tmp_path: Path) -> None:
    assert registry(tmp_path / "a", method("{name: resnet50}", **OK)).method("m").paper.reported[0].same_setting
    assert registry(tmp_path / "b", method("{name: small-resnet, params: {width: 64}}", **OK)).method("m")


@pytest.mark.parametrize("arch,rep,match", [
    ("{name: small-resnet, params: {width: 32}}", OK, "arch small-resnet"),
    ("{name: resnet18}", OK, "arch resnet18"),
    ("{name: resnet50}", {**OK, "protocol": "L-BFGS probe"}, "protocol 'L-BFGS probe'"),
    ("{name: resnet50}", {**OK, "data": "CIFAR-10"}, "data 'CIFAR-10'"),
    ("{name: resnet50}", {k: v for k, v in OK.items() if k != "data"}, "data None"),
    ("{name: resnet50}", {**OK, "task": "plain-task"}, "declares no setting"),
    ("{name: resnet50}", {"same_setting": True}, "needs the task"),
])
def test_a_claim_outside_the_tasks_setting_is_refused(tmp_path: Path, arch: str, rep: dict, match: str) -> None:
    reg = registry(tmp_path, method(arch, **rep))
    with pytest.raises(ClBenchError, match=match):
        reg.method("m")


def test_no_claim_needs_no_check(tmp_path: Path) -> None:
    reg = registry(tmp_path, method("{name: resnet18}", task="plain-task"))
    assert not reg.method("m").paper.reported[0].same_setting


def test_setting_is_not_part_of_the_spec_hash(tmp_path: Path) -> None:
    reg = registry(tmp_path, method("{name: resnet18}"))
    with_setting = reg.task("paper-task")
    (tmp_path / "tasks" / "paper-task.yaml").write_text(TASK.split("setting:")[0])
    assert Registry([tmp_path]).task("paper-task").spec_hash() == with_setting.spec_hash()


def test_delta_only_for_same_setting_numbers() -> None:
    ours = Cell(method="m", task="t", metric="top1", mean=72.0, std=1.0, n=3, seeds=[0, 1, 2])
    row = dict(method="m", metric="top1", reported=70.0, setting="s", source="x", task="t", ours=ours)
    assert ReportedRow(**row, same_setting=True).delta == pytest.approx(2.0)
    assert ReportedRow(**row, same_setting=False).delta is None


def test_every_project_baseline_passes_the_check() -> None:
    reg = Registry()
    claims = [(m.id, r.task) for m in reg.methods() for r in (m.paper.reported if m.paper else []) if r.same_setting]
    for mid, task in claims:
        assert reg.task(task).setting is not None, (mid, task)
    assert ("pixpro-r50", "voc07-det-c4") in claims
    pixpro = reg.method("pixpro")  # a small ResNet trained fresh: no R50 number is attached to a task
    assert all(r.task is None for r in (pixpro.paper.reported if pixpro.paper else []))
