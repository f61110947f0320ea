"""``segmentation``: fine-tune the method's encoder + an FCN / DeepLabV3 / Semantic FPN head; mIoU as mmseg computes it.

The encoder is deep-copied, its last stages dilated to ``output_stride`` (8), BN handled as
the task says, and a head put on the last stage (:mod:`cl_bench.protocols.dense.seg_heads`).
Training (mmseg's recipe): per iteration ``batch_size`` images from seeded per-epoch
permutations; each is rescaled by a factor uniform in ``scale_range`` (bilinear image,
nearest labels), randomly cropped to ``crop_size`` (padded with 0 / 255 where smaller) and
flipped with probability ``hflip``; all of this drawn from a numpy generator seeded by the
run seed. Pixel cross-entropy ignoring 255; SGD (or ``optimizer: adamw``: AdamW in mmcv's parameter
groups, the backbone at ``backbone_lr_mult`` x the lr, :func:`~cl_bench.protocols.dense.schedule.adamw`)
with poly learning rate per group, after a linear warmup from ``warmup_ratio`` x the lr.

Test: whole-image inference (``test_mode: whole``) or a sliding window (``slide``: crops of
``test_crop`` every ``test_stride``, logits averaged where windows overlap, as mmseg's
``slide_inference``); argmax; :class:`cl_bench.metrics.miou.IoUAccumulator` over the whole
split (mIoU, mAcc, aAcc; per-class IoU in the extras).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from cl_bench.components import register
from cl_bench.data.dense.types import SegmentationData, SegmentationSplit
from cl_bench.distributed import is_main, shard, unwrap_after_training, wrap_ddp
from cl_bench.errors import ClBenchError
from cl_bench.methods.trainer import fit
from cl_bench.metrics.miou import IoUAccumulator
from cl_bench.models.image.dense_trunk import FreezeAt, dilate_to_output_stride, freeze_at, set_batchnorm, trunk_of
from cl_bench.models.interfaces.hooks import language_guidance
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext
from cl_bench.protocols.dense.schedule import (adamw, dense_budget, index_stream, nonfinite_message, poly_lr, sgd,
                                               window_means)
from cl_bench.protocols.dense.seg_heads import AuxiliaryLogits, HeadName, backbone_parameters, build_head, build_segmenter


class SegmentationParams(ProtocolParams):
    head: HeadName = "fcn"
    output_stride: int = Field(8, ge=1)
    bn: Literal["frozen", "finetune", "sync"] = "sync"
    freeze_at: FreezeAt = 0
    iterations: int = Field(ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(0.01, gt=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    backbone_lr_mult: float = Field(1.0, ge=0)  # adamw: the backbone's lr multiplier (mmcv custom_keys)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    poly_power: float = Field(0.9, gt=0)
    min_lr: float = Field(1e-4, ge=0)
    warmup_iters: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.001, gt=0, le=1)
    crop_size: tuple[int, int] = (512, 1024)  # (H, W)
    scale_range: tuple[float, float] = (0.5, 2.0)
    hflip: float = Field(0.5, ge=0, le=1)
    head_channels: int = Field(512, ge=1)
    fpn_channels: int = Field(256, ge=1)  # head fpn: the FPN neck's width
    fcn_num_convs: int = Field(2, ge=0)
    concat_input: bool = True
    dropout: float = Field(0.1, ge=0, lt=1)
    aspp_rates: list[int] = Field(default_factory=lambda: [12, 24, 36], min_length=1)
    test_mode: Literal["whole", "slide"] = "whole"
    test_crop: tuple[int, int] = (512, 1024)
    test_stride: tuple[int, int] = (341, 682)


def augment_pair(image: torch.Tensor, label: np.ndarray, p: SegmentationParams, rng: np.random.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rescale, crop (pad 0 / 255) and flip of one (image [3, H, W], label [H, W])."""
    h, w = label.shape
    s = rng.uniform(*p.scale_range)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    img = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    lab = torch.from_numpy(label.astype(np.int64))[None, None].float()
    lab = F.interpolate(lab, size=(nh, nw), mode="nearest")[0, 0].long()
    ch, cw = p.crop_size
    ph, pw = max(0, ch - nh), max(0, cw - nw)
    if ph or pw:
        img = F.pad(img, (0, pw, 0, ph), value=0.0)
        lab = F.pad(lab, (0, pw, 0, ph), value=255)
    y0 = int(rng.integers(0, img.shape[1] - ch + 1))
    x0 = int(rng.integers(0, img.shape[2] - cw + 1))
    img, lab = img[:, y0:y0 + ch, x0:x0 + cw], lab[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < p.hflip:
        img, lab = img.flip(-1), lab.flip(-1)
    return img, lab


def segmentation_loss(out: torch.Tensor | AuxiliaryLogits, y: torch.Tensor) -> torch.Tensor:
    """Pixel cross-entropy ignoring 255; with :class:`AuxiliaryLogits` (DenseCLIP's score maps) plus
    ``weight`` x the cross-entropy of the auxiliary logits upsampled (bilinear) to the label, as mmseg."""
    logits, aux = (out.logits, out) if isinstance(out, AuxiliaryLogits) else (out, None)
    if not bool((y != 255).any()):  # every pixel ignored in this crop: no gradient signal, keep the graph alive
        return logits.sum() * 0.0 + (aux.aux_logits.sum() * 0.0 if aux is not None else 0.0)
    total = F.cross_entropy(logits, y, ignore_index=255)
    if aux is not None:
        up = F.interpolate(aux.aux_logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
        total = total + aux.weight * F.cross_entropy(up, y, ignore_index=255)
    return total


def train_segmenter(model: torch.nn.Module, split: SegmentationSplit, p: SegmentationParams, ctx: RunContext,
                    backbone: set[int] | None = None) -> dict[str, Any]:
    """The fine-tuning loop (:func:`cl_bench.methods.trainer.fit`); returns the training card.
    ``backbone``: the ids of the backbone's parameters (adamw's lr multiplier)."""
    device = ctx.device
    if p.optimizer == "adamw":
        opt = adamw(model, p.lr, p.weight_decay, backbone or set(), p.backbone_lr_mult)
    else:
        opt = sgd(model, p.lr, p.momentum, p.weight_decay)
    rng = np.random.default_rng(ctx.seed + 11)
    stream = index_stream(len(split), ctx.seed)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            # every rank draws (and augments) the same seeded global batch and trains on its share
            pairs = shard([augment_pair(split.image(i), split.label_map(i), p, rng) for i in
                           (next(stream) for _ in range(p.batch_size))])
            yield torch.stack([a for a, _ in pairs]).to(device), torch.stack([b for _, b in pairs]).to(device)

    def loss(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return segmentation_loss(model(x), y)

    def set_group_lrs(it: int) -> None:  # each group's poly schedule from its own base lr (mmcv)
        for group in opt.param_groups:
            group["lr"] = poly_lr(it, p.iterations, group["base_lr"], p.poly_power, p.min_lr, p.warmup_iters,
                                  p.warmup_ratio)

    model.train()
    per_group = p.optimizer == "adamw"
    log = fit(
        opt, total=p.iterations, batches=batches, loss=loss,
        lr_at=None if per_group else (lambda it: poly_lr(it, p.iterations, p.lr, p.poly_power, p.min_lr,
                                                         p.warmup_iters, p.warmup_ratio)),
        before_step=[set_group_lrs] if per_group else (),
        check_step=nonfinite_message("segmentation", p.lr),
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall = log.wall_s
    return {"iterations": p.iterations, "loss_curve": window_means(log.losses(), p.iterations), "train_s": round(wall, 3),
            "images_per_s": round(p.iterations * p.batch_size / wall, 3) if wall > 0 else 0.0}


@torch.no_grad()
def infer(model: torch.nn.Module, image: torch.Tensor, num_classes: int, p: SegmentationParams) -> torch.Tensor:
    """Logits [C, H, W] of one image (whole or sliding window)."""
    x = image[None]
    if p.test_mode == "whole":
        return model(x)[0]
    _, _, h, w = x.shape
    ch, cw = min(p.test_crop[0], h), min(p.test_crop[1], w)
    sh, sw = p.test_stride
    ys = list(range(0, max(h - ch, 0) + 1, sh))
    xs = list(range(0, max(w - cw, 0) + 1, sw))
    if ys[-1] + ch < h:
        ys.append(h - ch)
    if xs[-1] + cw < w:
        xs.append(w - cw)
    logits = torch.zeros(num_classes, h, w, device=x.device)
    count = torch.zeros(1, h, w, device=x.device)
    for y0 in ys:
        for x0 in xs:
            logits[:, y0:y0 + ch, x0:x0 + cw] += model(x[:, :, y0:y0 + ch, x0:x0 + cw])[0]
            count[:, y0:y0 + ch, x0:x0 + cw] += 1
    return logits / count


def run_segmentation(encoder: torch.nn.Module, data: Any, params: SegmentationParams, ctx: RunContext
                     ) -> ProtocolResult:
    if not isinstance(data, SegmentationData):
        raise ClBenchError(f"the segmentation protocol needs a segmentation dataset, got {type(data).__name__}")
    torch.manual_seed(ctx.seed)  # head init, dropout, multi-scale choice: fixed by the run seed
    encoder = copy.deepcopy(encoder).to(ctx.device)
    trunk = trunk_of(encoder)
    dilated = dilate_to_output_stride(trunk, params.output_stride)
    frozen = freeze_at(trunk, params.freeze_at)
    guided = language_guidance(encoder)
    if guided is None:
        model = build_segmenter(trunk, params.head, data.num_classes, params.head_channels, params.fcn_num_convs,
                                params.concat_input, params.dropout, params.aspp_rates, params.fpn_channels)
    else:  # the encoder concatenates its pixel-text score maps to the last stage the head reads (DenseCLIP)
        model = guided(trunk, list(data.prompt_names or data.class_names), lambda cins: build_head(
            params.head, cins, data.num_classes, params.head_channels, params.fcn_num_convs, params.concat_input,
            params.dropout, params.aspp_rates, [trunk.strides[n] for n in trunk.names], params.fpn_channels))
    backbone = {id(q) for q in backbone_parameters(model)}
    model, bn_note = set_batchnorm(model, params.bn)
    model.to(ctx.device)
    model = wrap_ddp(model, ctx.device, params.bn)
    card = train_segmenter(model, data.train, params, ctx, backbone)
    model, ddp = unwrap_after_training(model)
    if not is_main():  # rank 0 evaluates and writes
        return ProtocolResult(metrics={}, extras={"ddp": ddp})
    model.eval()
    acc = IoUAccumulator(data.num_classes, data.ignore_index)
    t0 = time.perf_counter()
    for i in range(len(data.test)):
        logits = infer(model, data.test.image(i).to(ctx.device), data.num_classes, params)
        acc.update(logits.argmax(0).cpu().numpy(), data.test.label_map(i))
    metrics, extras = acc.result(data.class_names)
    extras.update({
        "head": params.head, "output_stride": trunk.strides[trunk.names[-1]], "dilated_stages": dilated,
        "bn": bn_note, "frozen": frozen, "train": card, "predict_s": round(time.perf_counter() - t0, 3),
        "n_train": len(data.train), "n_test": len(data.test),
    })
    if guided is not None:
        extras["language_guidance"] = model.card()
    if ddp is not None:
        extras["ddp"] = ddp
    return ProtocolResult(metrics=metrics, extras=extras)


register("protocol", "segmentation", params=SegmentationParams)(
    Protocol(
    requires="image_encoder",
    run=run_segmentation,
    data_kind="segmentation",
    budget=dense_budget,
)
)
