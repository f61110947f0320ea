"""Detection protocol: trunk view, BN policies, schedules, targets, evaluation wiring, a tiny end-to-end run."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.ops import FrozenBatchNorm2d

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.metrics.voc_ap import ImageDetections
from cl_bench.models.image.dense_trunk import freeze_at, set_batchnorm, trunk_of
from cl_bench.protocols.dense.detectors import build_detector
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.dense.schedule import index_stream, multistep_lr, poly_lr, sgd
from cl_bench.protocols.detection import (
    DetectionParams,
    TrainTargets,
    detector_config,
    evaluate,
    run_detection,
)

TINY = {"iterations": 3, "batch_size": 2, "lr": 0.01, "warmup_iters": 1, "train_min_sizes": [48],
        "train_max_size": 48, "test_min_size": 48, "test_max_size": 48, "anchor_sizes": [8, 16, 32],
        "fpn_levels": 2, "fpn_channels": 16, "box_head_dim": 32, "mask_head_dim": 16, "c4_pool_size": 6,
        "rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 50, "rpn_pre_nms_top_n_test": 50,
        "rpn_post_nms_top_n_test": 30, "box_batch_size_per_image": 16, "rpn_batch_size_per_image": 32}
SCENES = {"n_train": 6, "n_test": 4, "image_size": 48, "seed": 1}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def voc(cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CLBENCH_CACHE", str(cache))
    return components.get("dataset", "scenes-voc")(SCENES, None)


@pytest.fixture
def coco(cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CLBENCH_CACHE", str(cache))
    return components.get("dataset", "scenes-coco")(SCENES, None)


def small(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return components.get("arch", "small-resnet")({"width": width}, in_channels=3, image_size=(48, 48))


def test_trunk_of_resnet18_shares_modules() -> None:
    enc = components.get("arch", "resnet18")({}, in_channels=3, image_size=(64, 64))
    trunk = trunk_of(enc)
    assert trunk.names == ["res2", "res3", "res4", "res5"]
    assert trunk.channels == {"res2": 64, "res3": 128, "res4": 256, "res5": 512}
    assert trunk.strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    assert trunk.stages["res5"] is enc.layer4 and trunk.stem[0] is enc.conv1
    x = torch.rand(2, 3, 64, 64)
    enc.eval()
    with torch.no_grad():
        assert torch.allclose(trunk(x)["res5"], enc.feature_maps(x)["res5"])


def test_non_residual_encoder_is_refused() -> None:
    raw = components.get("arch", "raw-pixels")({}, in_channels=3, image_size=(8, 8))
    with pytest.raises(ClBenchError, match="no residual stages"):
        trunk_of(raw)


def test_frozen_bn_equals_eval_mode_bn() -> None:
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), bn)
    ref = copy.deepcopy(model).eval()
    frozen, note = set_batchnorm(model, "frozen")
    assert isinstance(frozen[1], FrozenBatchNorm2d) and "frozen" in note
    frozen.train()  # frozen BN ignores train mode
    x = torch.randn(3, 3, 5, 5)
    assert torch.allclose(frozen(x), ref(x), atol=1e-5)
    same, note = set_batchnorm(copy.deepcopy(model), "sync")
    assert "one process" in note and not any(isinstance(m, nn.SyncBatchNorm) for m in same.modules())


def test_freeze_at_like_detectron2() -> None:
    trunk = trunk_of(small())
    assert freeze_at(trunk, 2) == ["stem", "stage1"]
    assert not any(p.requires_grad for p in trunk.stem.parameters())
    assert not any(p.requires_grad for p in trunk.stages["stage1"].parameters())
    assert all(p.requires_grad for p in trunk.stages["stage2"].parameters())
    with pytest.raises(ClBenchError, match="freeze_at"):
        freeze_at(trunk, 9)
    assert freeze_at(trunk_of(small()), "all") == ["stem", "stage1", "stage2", "stage3"]
    deep = trunk_of(components.get("arch", "resnet18")({}, in_channels=3, image_size=(64, 64)))
    assert freeze_at(deep, "all")[-1] == "res5" and not any(p.requires_grad for p in deep.parameters())


def test_multistep_lr_matches_detectron2_formula() -> None:
    # WarmupMultiStepLR, linear: factor = wf * (1 - it / W) + it / W for it < W
    assert multistep_lr(0, 0.02, [18, 22], 0.1, 10, 0.001) == pytest.approx(0.02 * 0.001)
    assert multistep_lr(5, 0.02, [18, 22], 0.1, 10, 0.001) == pytest.approx(0.02 * (0.001 * 0.5 + 0.5))
    assert multistep_lr(10, 0.02, [18, 22], 0.1, 10, 0.001) == pytest.approx(0.02)
    assert multistep_lr(18, 0.02, [18, 22], 0.1, 10, 0.001) == pytest.approx(0.002)
    assert multistep_lr(23, 0.02, [18, 22], 0.1, 10, 0.001) == pytest.approx(0.0002)
    # mmseg PolyLR: (lr - min) * (1 - it / T) ** p + min
    assert poly_lr(0, 100, 0.01, 0.9, 1e-4) == pytest.approx(0.01)
    assert poly_lr(50, 100, 0.01, 0.9, 1e-4) == pytest.approx((0.01 - 1e-4) * 0.5**0.9 + 1e-4)


def test_sgd_skips_weight_decay_on_norm_layers() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = sgd(model, 0.1, 0.9, 1e-4)
    def group_of(param: nn.Parameter) -> dict:
        return next(g for g in opt.param_groups if any(p is param for p in g["params"]))

    assert group_of(model[0].weight)["weight_decay"] == 1e-4 and group_of(model[0].bias)["weight_decay"] == 1e-4
    assert group_of(model[1].weight)["weight_decay"] == 0.0 and group_of(model[1].bias)["weight_decay"] == 0.0


def test_index_stream_is_epoch_permutations() -> None:
    s = index_stream(5, 0)
    first, second = [next(s) for _ in range(5)], [next(s) for _ in range(5)]
    assert sorted(first) == sorted(second) == list(range(5))


def test_targets_flip_boxes_and_masks(coco) -> None:
    data = TrainTargets(coco.train, masks=True)
    for i in range(len(coco.train)):
        rec = coco.train.target(i)
        img, t = data[(i, False)]
        img_f, t_f = data[(i, True)]
        keep = ~rec.iscrowd
        assert len(t["boxes"]) == int(keep.sum())  # crowd regions are not training instances
        assert set(t["labels"].tolist()) <= set(range(1, coco.num_classes + 1))
        w = img.shape[-1]
        b, bf = t["boxes"].numpy(), t_f["boxes"].numpy()
        np.testing.assert_allclose(bf[:, 0], w - b[:, 2])
        np.testing.assert_allclose(bf[:, 2], w - b[:, 0])
        assert torch.equal(img_f, img.flip(-1)) and torch.equal(t_f["masks"], t["masks"].flip(-1))


def test_detector_shapes_and_shared_res5(voc, coco) -> None:
    p = DetectionParams(head="c4", **TINY)
    enc = small()
    model = build_detector(trunk_of(enc), detector_config(p, voc))
    assert type(model) is FasterRCNN and model.roi_heads.box_head.stage is enc.stages[-1]
    pm = DetectionParams(head="c4", **TINY)
    mask_model = build_detector(trunk_of(enc), detector_config(pm, coco))
    assert isinstance(mask_model, MaskRCNN)
    assert mask_model.roi_heads.mask_head.stage is mask_model.roi_heads.box_head.stage
    with pytest.raises(ClBenchError, match="no instance masks"):
        detector_config(DetectionParams(masks="on", **TINY), voc)
    with pytest.raises(ClBenchError, match="anchor_sizes"):
        build_detector(trunk_of(enc), detector_config(DetectionParams(head="fpn", **{**TINY, "fpn_levels": 3}), voc))


def _perfect(split) -> list[ImageDetections]:
    return [ImageDetections(r.boxes.copy(), np.ones(len(r.labels), np.float32), r.labels.copy())
            for r in split.records]


def test_evaluation_wiring_perfect_detections(voc, coco) -> None:
    metrics, extras = evaluate(voc, _perfect(voc.test), None)
    assert metrics["AP"] == pytest.approx(100.0) and extras["use_07_metric"] is True
    masks = [r.instance_masks().astype(bool) for r in coco.test.records]
    dets = _perfect(coco.test)
    # crowd regions are not detections a model should produce: leave them out
    for d, r, k in zip(dets, coco.test.records, range(len(dets))):
        keep = ~r.iscrowd
        dets[k] = ImageDetections(d.boxes[keep], d.scores[keep], d.labels[keep])
        masks[k] = masks[k][keep]
    metrics, extras = evaluate(coco, dets, masks)
    assert metrics["AP"] == pytest.approx(100.0) and metrics["mask_AP"] == pytest.approx(100.0)
    assert set(extras) == {"bbox", "segm"}
    empty = [ImageDetections.empty() for _ in coco.test.records]
    assert evaluate(coco, empty, None)[0]["AP"] == 0.0


def test_tiny_end_to_end_is_deterministic_and_keeps_the_encoder(voc) -> None:
    enc = small()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    params = DetectionParams(head="c4", bn="frozen", **TINY)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        ctx = RunContext(torch.device("cpu"), 0, lambda m, s: np.zeros((0, 1)))
        results.append(run_detection(enc, voc, params, ctx))
    r = results[0]
    assert set(r.metrics) == {"AP", "AP50", "AP75"}
    assert all(0.0 <= v <= 100.0 for v in r.metrics.values())
    assert r.metrics == results[1].metrics
    assert r.extras["train"]["iterations"] == 3 and "frozen" in r.extras["bn"]
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())


def test_tiny_mask_rcnn_fpn_runs(coco) -> None:
    params = DetectionParams(head="fpn", bn="finetune", **{**TINY, "iterations": 2})
    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: np.zeros((0, 1)))
    r = run_detection(small(), coco, params, ctx)
    assert {"AP", "mask_AP", "APs"} <= set(r.metrics)
    assert r.extras["detector"] == "Mask R-CNN FPN"


def test_wrong_data_kind_is_a_clear_error() -> None:
    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: np.zeros((0, 1)))
    with pytest.raises(ClBenchError, match="detection dataset"):
        run_detection(small(), SimpleNamespace(name="digits"), DetectionParams(**TINY), ctx)


def test_bad_lr_steps_rejected() -> None:
    with pytest.raises(ValueError, match="lr_steps"):
        DetectionParams(**{**TINY, "lr_steps": [5]})


@pytest.mark.parametrize("task_id", ["scenes-voc-det", "scenes-coco-det", "scenes-seg", "voc07-det-c4",
                                     "coco-det-fpn-1x", "coco-det-c4-1x", "cityscapes-seg-fcn",
                                     "scenes-voc-det-frozen", "scenes-coco-det-frozen", "scenes-seg-frozen"])
def test_dense_task_specs_validate(task_id: str) -> None:
    from cl_bench.registry import Registry
    from cl_bench.params import validate_params

    reg = Registry()
    task = reg.task(task_id)
    proto = components.get("protocol", task.protocol.name)
    params = validate_params(proto.params, task.protocol.params, task_id)
    assert proto.requires == "image_encoder" and task.primary_metric in ("AP", "mIoU")
    if task_id == "voc07-det-c4":  # the published MoCo/PixPro VOC schedule
        assert (params.iterations, params.batch_size, params.lr_steps, params.head) == (24000, 16, [18000, 22000], "c4")
    if task_id.startswith(("voc07", "coco-det", "cityscapes")):
        with pytest.raises(ClBenchError, match="--data-root"):
            components.get("dataset", task.dataset.name)(task.dataset.params, None)
    if task_id.endswith("-frozen"):  # the frozen-feature twin differs from its task only in freezing
        twin = reg.task(task_id.removesuffix("-frozen"))
        assert task.dataset == twin.dataset and task.primary_metric == twin.primary_metric
        diff = {k for k in {*task.protocol.params, *twin.protocol.params}
                if task.protocol.params.get(k) != twin.protocol.params.get(k)}
        assert diff <= {"freeze_at", "bn", "lr"} and (params.freeze_at, params.bn) == (3, "frozen")
    for method in ("pixpro", "pixcontrast", "pixpro-r50", "pixpro-fpn"):
        assert "image_encoder" in reg.method(method).provides


# ------------------------------------------------------------ PixPro's pretrained FPN variant
def pyramid(levels: int = 2, channels: int = 16) -> nn.Module:
    torch.manual_seed(0)
    return components.get("arch", "with-fpn")(
        {"base": {"name": "small-resnet", "params": {"width": 8}}, "levels": levels, "channels": channels},
        in_channels=3, image_size=(48, 48))


def test_with_fpn_embeds_like_its_body_and_saves_the_fpn() -> None:
    enc = pyramid().eval()
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(enc(x), enc.body(x))
        levels = enc.pyramid_of(enc.feature_maps(x))
    assert list(levels) == ["0", "1"] and all(v.shape[1] == 16 for v in levels.values())
    assert levels["0"].shape[-1] == 2 * levels["1"].shape[-1]
    assert any(k.startswith("fpn.") for k in enc.state_dict()) and trunk_of(enc).stages["stage3"] is enc.body.stages[2]


def test_pixpro_pretrains_the_fpn_and_the_detector_starts_from_it(coco) -> None:
    from cl_bench.specs import TrainRecipe

    enc = pyramid()
    fpn_before = {k: v.clone() for k, v in enc.fpn.state_dict().items()}
    recipe = TrainRecipe(objective="pixpro", params={"proj_hidden": 16, "proj_dim": 8, "instance_weight": 1.0},
                         epochs=1, batch_size=3, lr=0.01, augment={"out_size": 32})
    card = components.get("objective", "pixpro").train_model(enc, recipe, coco.train, 0, 0, torch.device("cpu"))
    assert card.steps == 2
    assert any(not torch.equal(fpn_before[k], v) for k, v in enc.fpn.state_dict().items())  # the FPN learned

    from cl_bench.protocols.dense.detectors import pretrained_fpn

    cfg = detector_config(DetectionParams(head="fpn", **TINY), coco)
    trunk = trunk_of(enc)
    fpn = pretrained_fpn(enc, trunk, cfg)
    det = build_detector(trunk, cfg, fpn)
    assert det.backbone.fpn is enc.fpn
    assert pretrained_fpn(enc, trunk, detector_config(DetectionParams(head="c4", **TINY), coco)) is None
    with pytest.raises(ClBenchError, match="fpn_levels / fpn_channels"):
        pretrained_fpn(enc, trunk, detector_config(DetectionParams(head="fpn", **{**TINY, "fpn_channels": 32}), coco))

    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: np.zeros((0, 1)))
    r = run_detection(enc, coco, DetectionParams(head="fpn", bn="finetune", masks="off", **{**TINY, "iterations": 2}),
                      ctx)
    assert r.extras["fpn"] == "pretrained" and r.extras["detector"] == "Faster R-CNN FPN"
    assert run_detection(small(), coco, DetectionParams(head="fpn", masks="off", **{**TINY, "iterations": 1}),
                         ctx).extras["fpn"] == "new"
