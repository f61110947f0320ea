"""``detection``: fine-tune a torchvision Faster / Mask R-CNN whose backbone is the method's encoder.

The encoder (resnet18/50 or small-resnet) is wrapped stage by stage (:mod:`cl_bench.models.image.dense_trunk`)
into an FPN or C4 detector (:mod:`cl_bench.protocols.dense.detectors`); BN is frozen, fine-tuned or
synchronised as the task says (several processes under ``torchrun``: :mod:`cl_bench.distributed`);
the first ``freeze_at`` parts are frozen (detectron2 ``FREEZE_AT``; ``all``: a frozen-feature probe).
Training: SGD (momentum, weight decay, none on norm layers), detectron2's warmup + multi-step
schedule per iteration, ``batch_size`` images per iteration drawn from seeded per-epoch
permutations, horizontal flip with probability ``hflip`` (drawn in the main process, so the
run is deterministic on CPU for a seed), shortest side drawn from ``train_min_sizes`` by
torchvision's transform (torch RNG, seeded by the engine). Crowd objects (COCO ``iscrowd``)
are not training targets; VOC ``difficult`` objects are (detectron2 keeps them); boxes
narrower than one pixel after loading are dropped and counted.

``pooler``: torchvision's RoIAlign or detectron2's ROIAlignV2 (aligned, adaptive sampling; the
real tasks' setting, see :mod:`cl_bench.protocols.dense.detectors`). ``precise_bn_iters`` > 0 recomputes
the BatchNorm statistics over that many training batches after training (PreciseBN, as MoCo's
Base-RCNN-C4-BN; :mod:`cl_bench.protocols.dense.precise_bn`).

Test: shortest side ``test_min_size``, score threshold 0.05, NMS 0.5, 100 detections per
image (detectron2's test defaults); then the dataset's metric:
``voc`` -> :func:`cl_bench.metrics.voc_ap.evaluate_voc` (AP, AP50, AP75; 11-point for VOC2007);
``coco`` -> :func:`cl_bench.metrics.coco_eval.coco_evaluate` bbox (AP, AP50, AP75, APs/m/l)
and, with masks, segm (``mask_AP``...). The encoder the engine handed over is deep-copied
first: the cached pretrained model is never changed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from cl_bench.components import register
from cl_bench.data.dense.types import DetectionData, DetectionSplit
from cl_bench.distributed import is_main, shard, unwrap_after_training, wrap_ddp
from cl_bench.errors import ClBenchError
from cl_bench.methods.trainer import fit
from cl_bench.metrics.coco_eval import coco_evaluate, detections_to_results, records_to_coco
from cl_bench.metrics.voc_ap import ImageDetections, evaluate_voc
from cl_bench.models.image.dense_trunk import FreezeAt, freeze_at, set_batchnorm, trunk_of
from cl_bench.protocols.dense.detectors import DetectorConfig, build_detector, pretrained_fpn
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext
from cl_bench.protocols.dense.schedule import (
    dense_budget,
    index_stream,
    multistep_lr,
    nonfinite_message,
    sgd,
    window_means,
)
from cl_bench.protocols.dense.precise_bn import update_bn_stats


class DetectionParams(ProtocolParams):
    head: Literal["fpn", "c4"] = "fpn"
    masks: Literal["auto", "on", "off"] = "auto"  # auto: Mask R-CNN when the dataset has masks
    bn: Literal["frozen", "finetune", "sync"] = "sync"
    freeze_at: FreezeAt = 0
    iterations: int = Field(ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(0.02, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    lr_steps: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0)
    warmup_iters: int = Field(100, ge=0)
    warmup_factor: float = Field(0.001, gt=0, le=1)
    train_min_sizes: list[int] = Field(default_factory=lambda: [800], min_length=1)
    train_max_size: int = Field(1333, ge=1)
    test_min_size: int = Field(800, ge=1)
    test_max_size: int = Field(1333, ge=1)
    hflip: float = Field(0.5, ge=0, le=1)
    anchor_sizes: list[int] = Field(default_factory=lambda: [32, 64, 128, 256, 512], min_length=1)
    aspect_ratios: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)
    fpn_levels: int = Field(4, ge=1)
    fpn_channels: int = Field(256, ge=1)
    box_head_dim: int = Field(1024, ge=1)
    mask_head_dim: int = Field(256, ge=1)
    c4_pool_size: int = Field(14, ge=2)
    extra_norm: bool = False
    pooler: Literal["torchvision", "ROIAlignV2"] = "torchvision"  # real tasks: ROIAlignV2 (detectron2)
    precise_bn_iters: int = Field(0, ge=0)  # 0: off; MoCo's Base-RCNN-C4-BN: 200
    rpn_pre_nms_top_n_train: int = Field(2000, ge=1)
    rpn_pre_nms_top_n_test: int = Field(1000, ge=1)
    rpn_post_nms_top_n_train: int = Field(2000, ge=1)
    rpn_post_nms_top_n_test: int = Field(1000, ge=1)
    rpn_batch_size_per_image: int = Field(256, ge=1)
    box_batch_size_per_image: int = Field(512, ge=1)
    eval_batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _steps(self) -> DetectionParams:
        if sorted(self.lr_steps) != self.lr_steps or any(s < 1 or s >= self.iterations for s in self.lr_steps):
            raise ValueError(f"lr_steps must be increasing and inside 1..iterations-1, got {self.lr_steps}")
        return self


def detector_config(p: DetectionParams, data: DetectionData) -> DetectorConfig:
    masks = data.has_masks if p.masks == "auto" else p.masks == "on"
    if masks and not data.has_masks:
        raise ClBenchError(f"masks: on, but dataset '{data.name}' has no instance masks; use masks: auto or off")
    return DetectorConfig(
        head=p.head, num_classes=data.num_classes, masks=masks, fpn_channels=p.fpn_channels,
        box_head_dim=p.box_head_dim, mask_head_dim=p.mask_head_dim, fpn_levels=p.fpn_levels,
        anchor_sizes=tuple(p.anchor_sizes), aspect_ratios=tuple(p.aspect_ratios), extra_norm=p.extra_norm,
        c4_pool_size=p.c4_pool_size, pooler=p.pooler, min_size=tuple(p.train_min_sizes), max_size=p.train_max_size,
        rpn_pre_nms_top_n_train=p.rpn_pre_nms_top_n_train, rpn_pre_nms_top_n_test=p.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=p.rpn_post_nms_top_n_train, rpn_post_nms_top_n_test=p.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=p.rpn_batch_size_per_image, box_batch_size_per_image=p.box_batch_size_per_image,
    )


class TrainTargets(torch.utils.data.Dataset):
    """``(index, flip) -> (image [3, H, W], target dict)``: boxes xyxy, labels 1..K, masks."""

    def __init__(self, split: DetectionSplit, masks: bool) -> None:
        self.split = split
        self.masks = masks
        self.dropped_degenerate = 0
        self._mask_cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, bool]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        index, flip = key
        rec = self.split.target(index)
        image = self.split.image(index)
        keep = ~np.asarray(rec.iscrowd, bool)
        boxes = np.asarray(rec.boxes, np.float32).reshape(-1, 4)
        keep &= (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        self.dropped_degenerate += int((~keep & ~np.asarray(rec.iscrowd, bool)).sum())
        boxes = boxes[keep].copy()
        w = image.shape[-1]
        if flip:
            image = image.flip(-1)
            boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.as_tensor(rec.labels[keep] + 1, dtype=torch.int64)}
        if self.masks:
            m = self._instance_masks(index)[keep]
            target["masks"] = torch.from_numpy(np.ascontiguousarray(m[:, :, ::-1] if flip else m))
        return image, target

    def _instance_masks(self, index: int) -> np.ndarray:
        if self.split.cache_images and index in self._mask_cache:
            return self._mask_cache[index]
        m = self.split.target(index).instance_masks()
        if self.split.cache_images:
            self._mask_cache[index] = m
        return m


def _batches(data: TrainTargets, p: DetectionParams, seed: int) -> Any:
    """Endless batches of ``p.batch_size`` (image, target) pairs; flips drawn here, seeded."""
    rng = np.random.default_rng(seed + 7)
    stream = index_stream(len(data), seed)

    def keys() -> Any:
        while True:
            # the whole global batch is drawn on every rank (same seeded stream), each loads its share
            yield shard([(next(stream), bool(rng.random() < p.hflip)) for _ in range(p.batch_size)])

    if p.num_workers == 0:
        for batch in keys():
            yield [data[k] for k in batch]
    loader = torch.utils.data.DataLoader(data, batch_sampler=keys(), num_workers=p.num_workers,
                                         collate_fn=lambda b: b, persistent_workers=True)
    yield from loader


def train_detector(model: torch.nn.Module, data: TrainTargets, p: DetectionParams, ctx: RunContext,
                   ) -> dict[str, Any]:
    """The fine-tuning loop (:func:`cl_bench.methods.trainer.fit`); returns the training card (losses, images/s)."""
    device = ctx.device
    opt = sgd(model, p.lr, p.momentum, p.weight_decay)
    model.train()
    stream = _batches(data, p, ctx.seed)

    def to_device(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[list[torch.Tensor], list[dict]]:
        return [im.to(device) for im, _ in batch], [{k: v.to(device) for k, v in t.items()} for _, t in batch]

    log = fit(
        opt, total=p.iterations, batches=lambda epoch: stream, views=to_device,
        loss=lambda b: sum(model(*b).values()),
        lr_at=lambda it: multistep_lr(it, p.lr, p.lr_steps, p.gamma, p.warmup_iters, p.warmup_factor),
        check_step=nonfinite_message("detector", p.lr), progress="detector" if ctx.progress else None,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = log.wall_s
    return {"iterations": p.iterations, "loss_curve": window_means(log.losses(), p.iterations), "train_s": round(wall, 3),
            "images_per_s": round(p.iterations * p.batch_size / wall, 3) if wall > 0 else 0.0,
            "dropped_degenerate_boxes": data.dropped_degenerate}


def _forward_batch(device: torch.device) -> Any:
    """One training-mode forward of the detector on a batch of (image, target) pairs."""
    def run(model: torch.nn.Module, batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> Any:
        return model([im.to(device) for im, _ in batch], [{k: v.to(device) for k, v in t.items()} for _, t in batch])
    return run


@torch.no_grad()
def predict(model: torch.nn.Module, split: DetectionSplit, p: DetectionParams, device: torch.device,
            masks: bool) -> tuple[list[ImageDetections], list[np.ndarray] | None]:
    """Detections per test image (0-based class labels), and bool masks [N, H, W] when asked."""
    model.eval()
    model.transform.min_size = (p.test_min_size,)
    model.transform.max_size = p.test_max_size
    dets: list[ImageDetections] = []
    mask_out: list[np.ndarray] | None = [] if masks else None
    for start in range(0, len(split), p.eval_batch_size):
        idx = range(start, min(len(split), start + p.eval_batch_size))
        outputs = model([split.image(i).to(device) for i in idx])
        for out in outputs:
            dets.append(ImageDetections(out["boxes"].float().cpu().numpy(), out["scores"].float().cpu().numpy(),
                                        out["labels"].cpu().numpy().astype(np.int64) - 1))
            if mask_out is not None:
                mask_out.append((out["masks"][:, 0] > 0.5).cpu().numpy())
    return dets, mask_out


@contextmanager
def resized_sizes(model: torch.nn.Module) -> Iterator[list[tuple[int, int]]]:
    """(h, w) of every image after the detector's resize (its ``GeneralizedRCNNTransform``), while inside."""
    sizes: list[tuple[int, int]] = []
    hook = model.transform.register_forward_hook(
        lambda module, inputs, out: sizes.extend((int(h), int(w)) for h, w in out[0].image_sizes))
    try:
        yield sizes
    finally:
        hook.remove()


def evaluate(data: DetectionData, dets: list[ImageDetections], masks: list[np.ndarray] | None
             ) -> tuple[dict[str, float], dict[str, Any]]:
    """The dataset's metric on the test split."""
    records = data.test.records
    if data.metric == "voc":
        res = evaluate_voc(records, dets, data.class_names, data.use_07_metric)
        return res.metrics(), {"voc": res.extras(), "use_07_metric": data.use_07_metric}
    if data.metric != "coco":
        raise ClBenchError(f"dataset '{data.name}' asks for metric {data.metric!r}; known: voc, coco")
    gt: Any = data.test.gt_json or records_to_coco(records, data.class_names, data.category_ids)
    ids = [r.image_id for r in records]
    metrics, extras = coco_evaluate(gt, detections_to_results(ids, dets, data.category_ids), "bbox", ids)
    out_extras: dict[str, Any] = {"bbox": extras}
    if masks is not None:
        m_metrics, m_extras = coco_evaluate(gt, detections_to_results(ids, dets, data.category_ids, masks), "segm",
                                            ids)
        metrics.update({f"mask_{k}": v for k, v in m_metrics.items()})
        out_extras["segm"] = m_extras
    return metrics, out_extras


def run_detection(encoder: torch.nn.Module, data: Any, params: DetectionParams, ctx: RunContext) -> ProtocolResult:
    if not isinstance(data, DetectionData):
        raise ClBenchError(f"the detection protocol needs a detection dataset, got {type(data).__name__}")
    torch.manual_seed(ctx.seed)  # head init, dropout, multi-scale choice: fixed by the run seed
    cfg = detector_config(params, data)
    encoder = copy.deepcopy(encoder).to(ctx.device)
    trunk = trunk_of(encoder)
    frozen = freeze_at(trunk, params.freeze_at)
    fpn = pretrained_fpn(encoder, trunk, cfg)
    model = build_detector(trunk, cfg, fpn)
    model, bn_note = set_batchnorm(model, params.bn)
    model.to(ctx.device)
    model = wrap_ddp(model, ctx.device, params.bn, find_unused=cfg.masks)
    targets = TrainTargets(data.train, cfg.masks)
    train_card = train_detector(model, targets, params, ctx)
    if params.precise_bn_iters:  # every rank: SyncBN layers synchronise their batch statistics
        train_card["precise_bn"] = {"iters": params.precise_bn_iters, "layers": update_bn_stats(
            model, _batches(targets, params, ctx.seed + 1), params.precise_bn_iters, _forward_batch(ctx.device))}
    model, ddp = unwrap_after_training(model)
    if not is_main():  # rank 0 evaluates and writes
        return ProtocolResult(metrics={}, extras={"ddp": ddp})
    t0 = time.perf_counter()
    with resized_sizes(model) as sizes:
        dets, masks = predict(model, data.test, params, ctx.device, cfg.masks)
    predict_s = time.perf_counter() - t0
    metrics, extras = evaluate(data, dets, masks)
    extras.update({
        "detector": f"{'Mask' if cfg.masks else 'Faster'} R-CNN {params.head.upper()}", "bn": bn_note,
        "frozen": frozen, "fpn": "pretrained" if fpn is not None else ("new" if cfg.head == "fpn" else "none"),
        "train": train_card, "predict_s": round(predict_s, 3),
        "n_train": len(data.train), "n_test": len(data.test),
        "n_detections": int(sum(len(d.scores) for d in dets)),
        # what the detector's own resize made of the test images: provenance of test_min/max_size
        "test_input_sides": {"shortest": [min(min(s) for s in sizes), max(min(s) for s in sizes)],
                             "longest": [min(max(s) for s in sizes), max(max(s) for s in sizes)]},
    })
    if ddp is not None:
        extras["ddp"] = ddp
    return ProtocolResult(metrics=metrics, extras=extras)


register("protocol", "detection")(
    Protocol("detection", requires="image_encoder", params=DetectionParams, run=run_detection, data_kind="detection",
             budget=dense_budget)
)
