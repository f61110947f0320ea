"""MCL: pseudo-label combination, single-group batching, the mcl-stack encoder, the multistage trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cl_bench import components
from cl_bench.data.image.types import ArrayImageSplit
from cl_bench.errors import ClBenchError
from cl_bench.methods.image import mcl
from cl_bench.methods.image.mcl import combine_pseudo_labels, embed_images, group_batches, kmeans_labels
from cl_bench.obtain import trainer_for
from cl_bench.specs import TrainRecipe


def test_combined_pseudo_labels_are_cluster_intersections() -> None:
    rng = np.random.default_rng(0)
    prev, new = rng.integers(0, 3, 40), rng.integers(0, 4, 40)
    got = combine_pseudo_labels(prev, new, 4)
    for i in range(40):
        for j in range(40):
            assert (got[i] == got[j]) == (prev[i] == prev[j] and new[i] == new[j])
    assert sorted(set(got.tolist())) == list(range(len(set(zip(prev.tolist(), new.tolist())))))


def test_group_batches_draw_each_batch_from_one_group() -> None:
    groups = np.array([0] * 37 + [1] * 9 + [2] * 3 + [3] * 16)
    batches = group_batches(groups, batch_size=8, min_group=5, gen=torch.Generator().manual_seed(1))
    sizes: dict[int, list[int]] = {}
    seen: list[int] = []
    for b in batches:
        g = set(groups[b.numpy()].tolist())
        assert len(g) == 1
        sizes.setdefault(g.pop(), []).append(len(b))
        seen += b.tolist()
    assert len(seen) == len(set(seen))  # no image twice in an epoch
    # 37 -> 4 full batches (5 dropped); 9 -> 1 of 8; 3 < min_group -> none; 16 -> 2 of 8
    assert sizes == {0: [8, 8, 8, 8], 1: [8], 3: [8, 8]}
    small = group_batches(np.array([0] * 6 + [1] * 30), 8, 5, torch.Generator().manual_seed(0))
    assert sorted(len(b) for b in small) == [6, 8, 8, 8]  # a group under batch_size gives one batch
    again = group_batches(groups, 8, 5, torch.Generator().manual_seed(1))
    assert [b.tolist() for b in again] == [b.tolist() for b in batches]


def test_one_group_is_plain_random_batching() -> None:
    """With a single cluster, feature-aware sampling degenerates to SimCLR's shuffled batches."""
    batches = group_batches(np.zeros(50, dtype=np.int64), 16, 8, torch.Generator().manual_seed(3))
    assert [len(b) for b in batches] == [16, 16, 16]
    assert len({i for b in batches for i in b.tolist()}) == 48


def _stack(stages: int = 2, width: int = 4):
    return components.get("arch", "mcl-stack")(
        {"base": {"name": "small-resnet", "params": {"width": width}}, "stages": stages}, in_channels=1, image_size=(8, 8)
    )


def test_mcl_stack_concatenates_normalised_stage_embeddings() -> None:
    torch.manual_seed(0)
    stack = _stack(3).eval()
    x = torch.rand(5, 1, 8, 8)
    parts = [torch.nn.functional.normalize(stack.stage(k)(x), dim=1) for k in range(3)]
    with torch.no_grad():
        assert torch.allclose(stack(x), torch.cat(parts, dim=1).detach())
    assert stack.embed_dim == 3 * stack.stage_dim == stack(x).shape[1]
    w0, w1 = (dict(stack.stage(k).named_parameters())["stem.0.weight"] for k in (0, 1))
    assert not torch.equal(w0, w1)  # independently initialised copies


def _tiny_split(n: int = 48) -> ArrayImageSplit:
    g = torch.Generator().manual_seed(0)
    return ArrayImageSplit(torch.rand(n, 1, 8, 8, generator=g).numpy(), np.zeros(n, dtype=np.int64))


def _recipe(**params: object) -> TrainRecipe:
    return TrainRecipe(
        objective="mcl", params={"proj_hidden": 8, "proj_dim": 4, "clusters": 3, "min_group": 2, **params},
        epochs=1, batch_size=8, lr=0.01,
    )


def test_stage_k_batches_come_from_the_kmeans_clusters_of_stage_k_minus_1(monkeypatch: pytest.MonkeyPatch) -> None:
    seen_groups: list[np.ndarray] = []
    real = mcl.group_batches

    def recording(groups, batch_size, min_group, gen):  # type: ignore[no-untyped-def]
        seen_groups.append(np.array(groups))
        return real(groups, batch_size, min_group, gen)

    monkeypatch.setattr(mcl, "group_batches", recording)
    torch.manual_seed(0)
    stack, split = _stack(2), _tiny_split()
    card = trainer_for("mcl")(stack, _recipe(), split, 0, 5, torch.device("cpu"))
    assert len(card.stages) == 2 and card.steps == sum(s["steps"] for s in card.stages)
    assert all(np.isfinite(card.loss_curve)) and len(card.loss_curve) == 2
    stage0 = [g for g in seen_groups if len(set(g.tolist())) == 1]
    stage1 = [g for g in seen_groups if len(set(g.tolist())) > 1]
    assert stage0 and stage1
    expected = kmeans_labels(embed_images(stack.stage(0), split.tensor(), torch.device("cpu")), 3, 3, seed=5)
    assert np.array_equal(stage1[0], expected)
    assert card.stages[1]["groups"] == 3 and not stack.training


def test_one_cluster_keeps_every_stage_on_random_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = mcl.group_batches
    monkeypatch.setattr(mcl, "group_batches", lambda g, b, m, gen: (seen.append(len(set(np.asarray(g).tolist()))), real(g, b, m, gen))[1])
    trainer_for("mcl")(_stack(2), _recipe(clusters=1), _tiny_split(), 0, 0, torch.device("cpu"))
    assert set(seen) == {1}


def test_mcl_needs_the_stack_arch() -> None:
    enc = components.get("arch", "small-resnet")({"width": 4}, in_channels=1, image_size=(8, 8))
    with pytest.raises(ClBenchError, match="mcl-stack"):
        trainer_for("mcl")(enc, _recipe(), _tiny_split(), 0, 0, torch.device("cpu"))


def test_mcl_bad_params_are_one_line_errors() -> None:
    with pytest.raises(ClBenchError, match="clusters"):
        components.get("objective", "mcl")(embed_dim=4, num_classes=0, clusters=0)
    with pytest.raises(ClBenchError, match="stages"):
        components.get("arch", "mcl-stack")({"stages": 0}, in_channels=1, image_size=(8, 8))


def test_mcl_method_runs_through_the_engine(tiny_root, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cl_bench import engine
    from cl_bench.registry import Registry

    (tiny_root / "baselines" / "tiny-mcl.yaml").write_text(
        "id: tiny-mcl\ndescription: two-stage MCL (test fixture)\nprovides: [image_encoder]\n"
        "arch: {name: mcl-stack, params: {base: {name: small-resnet, params: {width: 4}}, stages: 2}}\n"
        "train: {objective: mcl, params: {clusters: 2, proj_hidden: 8, proj_dim: 4}, epochs: 1, batch_size: 128, lr: 0.01}\n"
    )
    reg = Registry()
    out = engine.run(reg.task("tiny-knn"), reg.method("tiny-mcl"), engine.RunOptions(results_dir=tmp_path / "r"))
    assert out.record.model_source == "trained" and 0 <= out.record.metrics["top1"] <= 100
    again = engine.run(reg.task("tiny-knn"), reg.method("tiny-mcl"), engine.RunOptions(results_dir=tmp_path / "r2"))
    assert again.model.reused and again.record.model_fingerprint == out.record.model_fingerprint
