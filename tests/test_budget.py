"""``--smoke`` / ``--limit N`` (cl_bench.budget): what each protocol cuts, that the cut is recorded
and kept apart from comparisons, never replaces a full result, keeps its own cache entries; and
``run --name``: one row per named result."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cl_bench import components
from cl_bench.budget import SMOKE_EVAL_ITEMS, Budget, apply_budget, first, first_per_class
from cl_bench.cli import main
from cl_bench.engine import RunOptions, run
from cl_bench.errors import ClBenchError
from cl_bench.metrics.coco_eval import coco_evaluate
from cl_bench.obtain import recipe_hash
from cl_bench.registry import Registry
from cl_bench.report.table import render, summarize
from cl_bench.specs import load_result
from cl_bench.params import validate_params
from cl_bench.sweep import PlannedRun, existing_comparable
from tests.conftest import SHARED_DATA, write_tree

SMOKE, LIMIT3 = Budget(smoke=True), Budget(limit=3)


def cut(protocol: str, params: dict, data: object, budget: Budget):
    p = components.get("protocol", protocol)
    return apply_budget(p, validate_params(p.params, params, protocol), data, budget)


# ------------------------------------------------------------------------------- the budget itself
def test_budget_values_and_bounds() -> None:
    assert Budget().full and Budget().eval_items is None and Budget().train_steps is None
    assert SMOKE.eval_items == SMOKE_EVAL_ITEMS == 8 and SMOKE.train_steps == 2
    assert Budget(smoke=True, limit=3).eval_items == 3 and LIMIT3.train_steps is None
    for bad in (0, -1, 10**7):
        with pytest.raises(ClBenchError, match="--limit"):
            Budget(limit=bad)
    assert first(5, 3).tolist() == [0, 1, 2] and first(2, 3).tolist() == [0, 1] and first(4, None).tolist() == [0, 1, 2, 3]
    # by hand: the first two of each class, in their original order
    assert first_per_class(np.array([2, 0, 2, 1, 0, 2, 0]), 2).tolist() == [0, 1, 2, 3, 4]


def test_every_protocol_declares_how_it_applies_a_budget() -> None:
    missing = [n for n in components.names("protocol") if components.get("protocol", n).budget is None]
    assert missing == []


def test_a_full_budget_changes_nothing() -> None:
    data = components.get("dataset", "digits")({}, None)
    reduced = cut("linear_probe", {}, data, Budget())
    assert reduced.data is data and reduced.applied == {}


# ------------------------------------------------------------------------------- what each protocol cuts
def test_probes_keep_the_first_test_images_and_under_smoke_two_training_images_per_class() -> None:
    data = components.get("dataset", "digits")({}, None)
    reduced = cut("knn", {}, data, SMOKE)
    assert np.array_equal(reduced.data.test.images, data.test.images[:8])
    assert np.array_equal(reduced.data.test.labels, data.test.labels[:8])
    want = [i for i, y in enumerate(data.train.labels) if list(data.train.labels[: i + 1]).count(y) <= 2]
    assert np.array_equal(reduced.data.train.labels, data.train.labels[want]) and len(want) == 20
    assert reduced.applied["test"] == f"first 8 of {len(data.test)} test images"
    assert reduced.data.test.fingerprint != data.test.fingerprint  # a subset never shares a cache entry
    limited = cut("linear_probe", {}, data, LIMIT3)
    assert limited.data.train is data.train and len(limited.data.test) == 3  # --limit cuts test only


def test_dense_protocols_cut_test_images_iterations_batch_and_precise_bn() -> None:
    reg = Registry()
    task = reg.task("voc07-det-c4")
    data = components.get("dataset", "voc")(task.dataset.params, SHARED_DATA / "voc_coco_samples")
    reduced = cut("detection", task.protocol.params, data, Budget(smoke=True, limit=2))
    assert [r.image_id for r in reduced.data.test.records] == [r.image_id for r in data.test.records[:2]]
    assert reduced.data.train is data.train
    p = reduced.params
    assert (p.iterations, p.batch_size, p.lr_steps, p.warmup_iters) == (2, 1, [], 100)  # the real schedule's start
    assert p.precise_bn_iters == 2 and p.test_min_size == 800 and p.train_min_sizes == task.protocol.params[
        "train_min_sizes"]
    assert reduced.train_steps == 2 and reduced.applied["iterations"] == "2 of 24000 iterations"
    only_limit = cut("detection", task.protocol.params, data, LIMIT3)
    assert only_limit.params.iterations == 24000 and len(only_limit.data.test) == 3


def test_mmeb_keeps_the_first_rows_of_every_dataset(tmp_path: Path) -> None:
    from tests.protocols.test_mmeb import random_tree

    random_tree(tmp_path, rows_per_dataset=5)
    names = ["ImageNet-1K", "MSCOCO_t2i", "ImageNet-A", "RefCOCO", "OK-VQA"]
    data = components.get("dataset", "mmeb")({"datasets": names, "image_size": 16}, tmp_path)
    reduced = cut("mmeb", {}, data, LIMIT3)
    for full, part in zip(data.datasets, reduced.data.datasets):
        assert part.name == full.name and part.qry_text == full.qry_text[:3] and part.tgt_img == full.tgt_img[:3]
        assert part.fingerprint != full.fingerprint
    assert reduced.applied["rows"] == "first 3 rows of each of the 5 datasets: 15 of 25 rows"


def test_mmvp_keeps_the_first_pairs_of_every_pattern(tmp_path: Path) -> None:
    from tests.protocols.test_mmvp import write_release

    rows = [(str(2 * k + j + 1), kind, f"{kind} pair {k} statement {j}") for k, kind in
            enumerate(["Orientation"] * 3 + ["Color"] * 2) for j in range(2)]
    write_release(tmp_path / "MMVP_VLM", rows)
    data = components.get("dataset", "mmvp-vlm")({"image_size": 16}, tmp_path)
    reduced = cut("mmvp_vlm", {}, data, Budget(limit=2)).data
    assert reduced.types == ["Orientation", "Orientation", "Color", "Color"]  # 2 of 3 orientation pairs, both colour
    keep = [0, 1, 2, 3, 6, 7, 8, 9]  # the statements (and images) of pairs 0, 1, 3, 4
    assert reduced.statements == [data.statements[i] for i in keep] and reduced.qids.tolist() == data.qids[keep].tolist()
    assert np.array_equal(reduced.images.tensor(), data.images.tensor()[keep])


def test_bitext_truthfulqa_and_retrieval_keep_their_first_items(tmp_path: Path) -> None:
    tatoeba = components.get("dataset", "tatoeba")(Registry().task("tatoeba-mini").dataset.params, None)
    reduced = cut("bitext", {}, tatoeba, LIMIT3).data
    for full, part in zip(tatoeba.pairs, reduced.pairs):
        assert part.source.texts == full.source.texts[:3] and part.target.texts == full.target.texts[:3]
    tqa = components.get("dataset", "truthfulqa")({}, SHARED_DATA)
    assert cut("multiple_choice", {"targets": "mc1"}, tqa, LIMIT3).data.questions == tqa.questions[:3]
    from tests.data.image_text.test_caption_loaders import write_coco

    write_coco(tmp_path)
    coco = components.get("dataset", "coco-captions")({"image_size": 16}, tmp_path)
    part = cut("retrieval", {}, coco, Budget(limit=2)).data.test
    assert part.captions == coco.test.captions[:2] and np.array_equal(part.images.tensor(), coco.test.images.tensor()[:2])


def test_icl_fewshot_keeps_the_first_evaluated_examples_and_caps_adaptation_steps() -> None:
    from cl_bench.protocols.icl_fewshot import fixed_subsample_indices

    task = Registry().task("icl-fewshot-cpt-synthetic")
    data = components.get("dataset", task.dataset.name)(task.dataset.params, None)
    reduced = cut("icl_fewshot", task.protocol.params, data, SMOKE)
    evaluated = fixed_subsample_indices(len(data.test), task.protocol.params["n_test"])
    assert reduced.data.test.examples == [data.test.examples[i] for i in evaluated[:8]]
    assert reduced.params.n_test is None and reduced.params.ks == task.protocol.params["ks"]
    assert (reduced.params.cpt.steps, reduced.params.prompt_tuning.steps, reduced.train_steps) == (2, 2, 2)
    assert reduced.data.train is data.train  # the demonstration pool is the task's


def test_coco_evaluation_of_a_subset_equals_pycocotools_on_that_subset(tmp_path: Path) -> None:
    """``img_ids`` against an independent computation: pycocotools on a ground truth holding only those images."""
    doc = json.loads((SHARED_DATA / "voc_coco_samples" / "coco2014_subsets" / "person.json").read_text())
    rng = np.random.default_rng(0)
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.random()),
                "bbox": [v + float(rng.normal(0, 4)) for v in a["bbox"]]} for a in doc["annotations"]]
    keep = [img["id"] for img in doc["images"][:4]]
    sub = copy.deepcopy(doc)
    sub["images"] = [i for i in doc["images"] if i["id"] in keep]
    sub["annotations"] = [a for a in doc["annotations"] if a["image_id"] in keep]
    mine = [r for r in results if r["image_id"] in keep]
    got, _ = coco_evaluate(doc, mine, "bbox", img_ids=keep)
    want, _ = coco_evaluate(sub, mine, "bbox")
    assert got == want
    everything, _ = coco_evaluate(doc, mine, "bbox")
    assert everything["AP"] < got["AP"]  # without img_ids the images nobody predicted count as misses


# ------------------------------------------------------------------------------- recorded, kept apart
def cli(*args: str) -> int:
    return main(list(args))


def test_smoke_result_is_recorded_listed_apart_and_never_compared(tiny_root: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    res, base = tmp_path / "res", tmp_path / "base"
    assert cli("run", "--method", "tiny-random", "--task", "tiny-knn", "--results-dir", str(base)) == 0
    assert cli("run", "--method", "tiny-random", "--task", "tiny-knn", "--smoke", "--results-dir", str(res)) == 0
    rec = load_result(res / "tiny-random" / "tiny-knn" / "seed0.json")
    assert rec.budget is not None and rec.budget.smoke and rec.budget.limit == 8 and rec.extras["n_test"] == 8
    digits = components.get("dataset", "digits")({}, None)
    assert rec.budget.applied == {"test": f"first 8 of {len(digits.test)} test images",
                                  "train": f"first 2 training images of each class: 20 of {len(digits.train)}"}
    assert load_result(base / "tiny-random" / "tiny-knn" / "seed0.json").budget is None
    summary = summarize(res, Registry())
    assert summary.cells == [] and [s.kind for s in summary.stale] == ["budget"]
    capsys.readouterr()
    assert cli("table", "--results-dir", str(res)) == 0
    out = capsys.readouterr().out
    assert "(no comparable results)" in out and "1 reduced-budget result(s)" in out and "smoke budget" in out
    # the only current result is incomparable: nothing was compared (exit 4), never a pass
    assert cli("regress", "--results-dir", str(res), "--baseline", str(base)) == 4
    assert "incomparable  tiny-random  tiny-knn  top1" in capsys.readouterr().out
    reg = Registry()
    planned = PlannedRun(reg.method("tiny-random"), reg.task("tiny-knn"), 0)
    assert not existing_comparable(res, planned) and existing_comparable(base, planned)  # a sweep redoes it


def test_a_reduced_run_never_replaces_a_full_result(tiny_root: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    res = tmp_path / "res"
    path = res / "tiny-random" / "tiny-knn" / "seed0.json"
    assert cli("run", "--method", "tiny-random", "--task", "tiny-knn", "--limit", "5", "--results-dir", str(res)) == 0
    assert load_result(path).budget.limit == 5
    assert cli("run", "--method", "tiny-random", "--task", "tiny-knn", "--results-dir", str(res)) == 0  # full replaces it
    before = path.read_bytes()
    assert load_result(path).budget is None
    capsys.readouterr()
    assert cli("run", "--method", "tiny-random", "--task", "tiny-knn", "--smoke", "--results-dir", str(res)) == 2
    assert "holds a full-budget result" in capsys.readouterr().err and path.read_bytes() == before


def test_sweep_takes_the_budget_and_a_full_sweep_redoes_reduced_cells(tiny_root: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    res = tmp_path / "res"
    sweep = ["sweep", "--methods", "tiny-random", "--tasks", "tiny-knn", "--seeds", "2", "--results-dir", str(res)]
    assert cli(*sweep, "--limit", "3") == 0
    recs = [load_result(res / "tiny-random" / "tiny-knn" / f"seed{s}.json") for s in (0, 1)]
    assert [(r.seed, r.budget.limit, r.budget.smoke, r.extras["n_test"]) for r in recs] == [(0, 3, False, 3),
                                                                                            (1, 3, False, 3)]
    capsys.readouterr()
    assert cli(*sweep) == 0  # a full sweep skips nothing: both reduced cells are redone at the full budget
    assert all(load_result(res / "tiny-random" / "tiny-knn" / f"seed{s}.json").budget is None for s in (0, 1))
    assert summarize(res, Registry()).stale == []


def test_feature_cache_keys_follow_the_budget(tiny_root: Path, tmp_path: Path) -> None:
    reg = Registry()
    task, method = reg.task("tiny-knn"), reg.method("tiny-random")
    opts = RunOptions(results_dir=tmp_path / "r", cache_dir=tmp_path / "cache", write=False)
    limited = run(task, method, RunOptions(**{**opts.__dict__, "budget": Budget(limit=5)}))
    assert (limited.feature_cache_hits, limited.feature_cache_misses) == (0, 2)
    smoke = run(task, method, RunOptions(**{**opts.__dict__, "budget": SMOKE}))
    assert (smoke.feature_cache_hits, smoke.feature_cache_misses) == (0, 2)  # its own train and test subsets
    full = run(task, method, opts)
    assert (full.feature_cache_hits, full.feature_cache_misses) == (1, 1)  # --limit left train whole: shared
    assert full.record.extras["n_test"] > limited.record.extras["n_test"] == 5


def test_smoke_trains_a_fresh_recipe_one_epoch_in_its_own_cache_entry(tiny_root: Path, tmp_path: Path) -> None:
    write_tree(tiny_root, {"baselines/tiny-simclr3.yaml": """
        id: tiny-simclr3
        description: three-epoch SimCLR (test fixture)
        provides: [image_encoder]
        arch: {name: small-resnet, params: {width: 8}}
        train: {objective: simclr, epochs: 3, batch_size: 256, lr: 0.001, warmup_epochs: 1}
    """})
    reg = Registry()
    opts = RunOptions(results_dir=tmp_path / "r", cache_dir=tmp_path / "cache", write=False, budget=SMOKE)
    smoke = run(reg.task("tiny-knn"), reg.method("tiny-simclr3"), opts)
    card = smoke.model.card
    assert card["recipe"]["epochs"] == 1 and card["recipe"]["warmup_epochs"] == 0 and card["epochs"] == 1
    assert smoke.record.budget.applied["recipe"] == f"1 of 3 training epochs ({card['steps']} steps)"
    again = run(reg.task("tiny-knn"), reg.method("tiny-simclr3"), opts)
    assert again.model.reused  # the smoke checkpoint is cached for smoke runs ...
    full_hash = recipe_hash(reg.method("tiny-simclr3"))
    assert smoke.record.recipe_hash is not None and smoke.record.recipe_hash != full_hash  # ... under its own key


# ------------------------------------------------------------------------------- run --name
def test_named_results_are_their_own_rows(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cl_bench.report.leaderboard import reproduce_command
    from tests.test_byo_checkpoints import image_tree, moco_v2_file

    image_tree(tmp_path / "data", n_train=4, n_val=3)
    small = {"blocks": [1, 1, 1, 1], "width": 8}
    for seed, name in ((1, "moco-a"), (2, "moco-b")):  # two files of one layout, other weights
        moco_v2_file(tmp_path / f"{name}.pth", "resnet50", small)
        state = torch.load(tmp_path / f"{name}.pth", weights_only=True)
        torch.manual_seed(seed)
        state["state_dict"] = {k: (v + torch.randn_like(v.float()).to(v.dtype) * 0.01 if v.is_floating_point() else v)
                               for k, v in state["state_dict"].items()}
        torch.save(state, tmp_path / f"{name}.pth")
    common = ["run", "--method", "resnet50", "--task", "imagefolder-linear", "--data-root", str(tmp_path / "data"),
              "--results-dir", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
              "--arch-param", "blocks=[1,1,1,1]", "--arch-param", "width=8"]
    for name in ("moco-a", "moco-b"):
        assert cli(*common, "--checkpoint", str(tmp_path / f"{name}.pth"), "--name", name) == 0
    recs = {n: load_result(tmp_path / "res" / n / "imagefolder-linear" / "seed0.json") for n in ("moco-a", "moco-b")}
    assert all(r.built_from == "resnet50" and r.method == n for n, r in recs.items())
    assert recs["moco-a"].model_fingerprint != recs["moco-b"].model_fingerprint
    assert not (tmp_path / "res" / "resnet50").exists()  # neither overwrote the other under the method's id
    summary = summarize(tmp_path / "res", Registry())
    assert summary.methods() == ["moco-a", "moco-b"] and "| moco-a |" in render(summary)
    cmd = reproduce_command(recs["moco-a"], [0])
    assert "--method resnet50" in cmd and "--name moco-a" in cmd
    capsys.readouterr()
    assert cli(*common, "--name", "resnet18") == 2 and "registered method" in capsys.readouterr().err
    assert cli(*common, "--name", "../escape") == 2 and "plain name" in capsys.readouterr().err
    assert cli(*common, "--name", "resnet50", "--smoke") == 0  # its own id: the plain method row
    assert load_result(tmp_path / "res" / "resnet50" / "imagefolder-linear" / "seed0.json").built_from is None
