"""`clbench regress`: tolerance, statuses, exit codes, the sanity gate; real planted regressions."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest

from cl_bench.cli import main
from cl_bench.registry import Registry
from cl_bench.regress import (
    Tolerance,
    chance_level,
    compare,
    missing_backbone_keys,
    render_report,
    suspect_reasons,
    tolerance_for,
)
from cl_bench.store import write_result
from tests.conftest import write_tree
from tests.record_helpers import make_record


def _write(res: Path, task, method: str, values: list[float], **kw) -> None:
    for seed, v in enumerate(values):
        write_result(res, make_record(task, method, seed, v, **kw))


def _status(report, method: str, task: str, metric: str = "top1") -> str:
    return next(r.status for r in report.rows if (r.method, r.task, r.metric) == (method, task, metric))


def test_tolerance_by_hand() -> None:
    tol = Tolerance()
    assert tol.width(statistics.stdev([80.0, 82.0, 84.0])) == pytest.approx(6.0)  # 3 × 2
    assert tol.width(0.1) == 1.0 and tol.width(math.nan) == 1.0  # the absolute floor
    assert Tolerance(abs_floor=0.5, k_std=2).width(1.0) == 2.0
    assert tol.higher_is_better("top1") and not tol.higher_is_better("mse")
    assert not Tolerance(lower_is_better=("gap",)).higher_is_better("gap")
    spec = SimpleNamespace(regression={"abs_floor": 0.25, "k_std": 2, "lower_is_better": ["gap"]})
    assert tolerance_for(spec) == Tolerance(0.25, 2.0, ("gap",))
    spec = SimpleNamespace(regression=SimpleNamespace(abs_floor=2.0, k_std=1.0, lower_is_better=[]))
    assert tolerance_for(spec) == Tolerance(2.0, 1.0, ())
    assert tolerance_for(SimpleNamespace()) == Tolerance(1.0, 3.0, ())


def test_statuses_against_hand_computed_tolerances(tiny_registry: Registry, tmp_path: Path) -> None:
    knn, lin = tiny_registry.task("tiny-knn"), tiny_registry.task("tiny-linear")
    base, cur = tmp_path / "base", tmp_path / "cur"
    _write(base, knn, "steady", [80.0, 82.0, 84.0])   # std 2 -> tolerance 6
    _write(cur, knn, "steady", [76.5, 77.0, 77.5])    # -5: within 6 -> unchanged
    _write(base, knn, "worse", [80.0, 82.0, 84.0])
    _write(cur, knn, "worse", [74.0, 75.0, 76.0])     # -7 -> regressed
    _write(base, knn, "better", [50.0])               # one seed -> floor 1.0
    _write(cur, knn, "better", [51.5])                # +1.5 -> improved
    _write(base, knn, "gone", [60.0])
    _write(base, lin, "respec", [70.0], spec_hash="1" * 64)  # baseline under an older spec
    _write(cur, lin, "respec", [70.0])
    _write(cur, lin, "fresh", [65.0])
    report = compare(cur, base, tiny_registry)
    assert _status(report, "steady", "tiny-knn") == "unchanged"
    row = next(r for r in report.rows if r.method == "worse")
    assert row.status == "regressed" and row.delta == pytest.approx(-7.0) and row.tolerance == pytest.approx(6.0)
    assert _status(report, "better", "tiny-knn") == "improved"
    assert _status(report, "gone", "tiny-knn") == "missing"
    assert _status(report, "respec", "tiny-linear") == "incomparable"
    assert "baseline measured under task v1 spec 1111111111" in next(r.note for r in report.rows if r.method == "respec")
    assert _status(report, "fresh", "tiny-linear") == "new"
    assert report.failed
    text = render_report(report)
    assert re.search(r"^REGRESSED +worse +tiny-knn +top1 +82.00 ± 2.00 \(n=3\) +75.00 ± 1.00 \(n=3\) +-7.00 +±6.00$",
                     text, re.MULTILINE)
    assert "FAIL: 1 improved, 1 unchanged, 1 regressed, 1 missing, 1 incomparable, 0 suspect, 1 new" in text

    # exit codes through the CLI: 1 on a regression, 0 without, 2 on a usage error
    assert main(["regress", "--baseline", str(base), "--results-dir", str(cur)]) == 1
    assert main(["regress", "--baseline", str(base), "--results-dir", str(cur), "--methods", "steady,better"]) == 0
    assert main(["regress", "--baseline", str(tmp_path / "nope"), "--results-dir", str(cur)]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["regress", "--results-dir", str(cur)])
    assert exit_info.value.code == 2


def test_lower_is_better_metric_regresses_upwards(tiny_root: Path, tmp_path: Path) -> None:
    write_tree(tiny_root, {"tasks/tiny-mse.yaml": """
        id: tiny-mse
        version: 1
        description: a lower-is-better primary metric (test fixture)
        dataset: {name: digits}
        protocol: {name: knn}
        primary_metric: mse
    """})
    reg = Registry()
    task = reg.task("tiny-mse")
    base, cur = tmp_path / "base", tmp_path / "cur"
    for res, v in ((base, 2.0), (cur, 4.0)):
        rec = make_record(task.model_copy(update={"primary_metric": "top1"}), "m", 0, 50.0, extras={},
                          spec_hash=task.spec_hash())
        write_result(res, rec.model_copy(update={"primary_metric": "mse", "metrics": {**rec.metrics, "mse": v}}))
    assert _status(compare(cur, base, reg), "m", "tiny-mse", "mse") == "regressed"
    assert _status(compare(base, cur, reg), "m", "tiny-mse", "mse") == "improved"


def test_sanity_gate(tiny_registry: Registry, tmp_path: Path) -> None:
    knn = tiny_registry.task("tiny-knn")
    # chance 10%, n = 540: 3 binomial sds = 300 * sqrt(0.1 * 0.9 / 540) = 3.873 points
    margin = 300 * math.sqrt(0.1 * 0.9 / 540)
    near = make_record(knn, "m", 0, 10.0 + margin - 0.01)
    far = make_record(knn, "m", 0, 10.0 + margin + 0.01)
    assert chance_level(near) == 10.0
    assert suspect_reasons(near) and not suspect_reasons(far)
    assert not suspect_reasons(near, higher_is_better=False)
    small_n = make_record(knn, "m", 0, 10.9, extras={"chance": 10.0})  # no n: the 1-point floor
    assert suspect_reasons(small_n) and not suspect_reasons(make_record(knn, "m", 0, 11.1, extras={"chance": 10.0}))
    assert chance_level(make_record(knn, "m", 0, 50.0, extras={})) is None
    # a class count says nothing about chance for a metric that is not class accuracy
    recall = make_record(knn, "m", 0, 12.0).model_copy(update={"primary_metric": "mean_recall",
                                                               "metrics": {"mean_recall": 12.0}})
    assert chance_level(recall) is None and not suspect_reasons(recall)
    bn_only = make_record(knn, "m", 0, 90.0, checkpoint={"missing": ["bn1.num_batches_tracked"]})
    assert missing_backbone_keys(bn_only) == [] and not suspect_reasons(bn_only)
    hf = make_record(knn, "m", 0, 90.0, checkpoint={"missing_keys": ["encoder.layer.0.weight"]})
    assert missing_backbone_keys(hf) == ["encoder.layer.0.weight"]

    base, cur = tmp_path / "base", tmp_path / "cur"
    write_result(base, make_record(knn, "m", 0, 90.0))
    write_result(cur, make_record(knn, "m", 0, 90.0, checkpoint={"missing": ["conv1.weight"]}))
    report = compare(cur, base, tiny_registry)
    assert _status(report, "m", "tiny-knn") == "suspect" and report.failed
    assert main(["regress", "--baseline", str(base), "--results-dir", str(cur)]) == 1


def test_real_runs_unchanged_rerun_passes_and_damaged_checkpoint_fails(tiny_registry: Registry, tmp_path: Path,
                                                                     capsys) -> None:
    import torch
    from safetensors.torch import save_file

    from cl_bench import components
    from cl_bench.engine import RunOptions
    from cl_bench.sweep import plan, run_sweep

    runs = plan(tiny_registry, ["tiny-random"], ["tiny-knn"], [0, 1])
    for name in ("base", "cur"):  # the re-run uses a fresh cache: nothing is shared but the code
        report = run_sweep(runs, RunOptions(results_dir=tmp_path / name, cache_dir=tmp_path / f"c-{name}",
                                            device="cpu"))
        assert len(report.done) == 2, report.failed
    assert main(["regress", "--baseline", str(tmp_path / "base"), "--results-dir", str(tmp_path / "cur")]) == 0
    out = capsys.readouterr().out
    assert "OK: 0 improved, 1 unchanged, 0 regressed, 0 missing" in out  # identical numbers

    # planted regression: a damaged checkpoint (every conv/linear weight equal) of the same method
    model = components.get("arch", "small-resnet")({"width": 8}, in_channels=1, image_size=(8, 8))
    flat = {k: torch.full_like(v, 0.05) if k.endswith("weight") and v.dim() > 1 else v.clone()
            for k, v in model.state_dict().items()}
    save_file(flat, str(tmp_path / "damaged.safetensors"))
    code = main(["regress", "--baseline", str(tmp_path / "base"), "--methods", "tiny-random", "--tasks",
                 "tiny-knn", "--checkpoint", str(tmp_path / "damaged.safetensors"), "--seeds", "2",
                 "--device", "cpu", "--results-dir", str(tmp_path / "ckpt")])
    out = capsys.readouterr().out
    assert code == 1
    row = next(ln for ln in out.splitlines() if ln.split()[:4][1:] == ["tiny-random", "tiny-knn", "top1"])
    assert row.split()[0] in ("REGRESSED", "SUSPECT")
    report = compare(tmp_path / "ckpt", tmp_path / "base", tiny_registry)
    top1 = next(r for r in report.rows if r.metric == "top1")
    assert top1.delta < -40  # ~82% -> ~10% (chance): far outside any tolerance
