"""One rehearsal case per real task spec: the method a user would run it with, the fabricated
checkpoint, and the facts its smoke result must show for the real pipeline to have run.

A real task is one that needs ``--data-root``: its dataset, loaded with the task's own params and
no data root, refuses (:func:`real_task_ids`); ``test_rehearsal`` fails when one has no case here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.registry import Registry
from cl_bench.specs import ResultRecord
from tests.rehearsal.checkpoints import R18_REDUCED, R50_REDUCED, TINY_RN_CLIP_NAME

Check = Callable[[ResultRecord], None]


@dataclass(frozen=True)
class Case:
    task: str
    method: str
    checkpoint: str  # a key of checkpoints.FABRICATE
    arch_params: dict = field(default_factory=dict)
    root: str = "data"  # which data root: "data" (build_data_root) or "tqa-parquet"
    check: Check | None = None
    limit: int | None = None  # --limit on top of --smoke (None: the smoke default, 8 items)


def real_task_ids(registry: Registry | None = None) -> list[str]:
    """Every task whose dataset needs real data: loading it with the task's params and no data root fails."""
    registry = registry or Registry()
    env = os.environ.pop("CLBENCH_DATA", None)
    try:
        embedded = {t.dataset.name for t in registry.tasks() if "embedded" in t.tags}
        embedded |= {m.train.data.name for m in registry.methods() if m.train is not None and m.train.data is not None}
        out = []
        for t in registry.tasks():
            if t.dataset.name in embedded:
                continue
            try:
                components.get("dataset", t.dataset.name)(t.dataset.params, None)
            except ClBenchError:
                out.append(t.id)
        return out
    finally:
        if env is not None:
            os.environ["CLBENCH_DATA"] = env


# ----------------------------------------------------------------------------------------- checks
def detection(voc: bool, masks: bool, head: str) -> Check:
    def check(r: ResultRecord) -> None:
        ex = r.extras
        assert ex["detector"] == f"{'Mask' if masks else 'Faster'} R-CNN {head}", ex["detector"]
        # the test images reached the detector at 800 px shortest side (1333 px longest at most; torchvision
        # floors the scaled size, so 799 is 800 px too); a COCO panorama is bounded by the longest side
        sides = ex["test_input_sides"]
        assert 799 <= sides["shortest"][1] <= 800 and sides["longest"][1] <= 1333, sides
        if voc:  # no VOC image is wide enough for the 1333 px bound: all at 800
            assert sides["shortest"][0] >= 799, sides
        assert ex["train"]["iterations"] == 2 and len(ex["train"]["loss_curve"]) >= 1
        assert {"AP", "AP50", "AP75"} <= set(r.metrics)
        if voc:  # detectron2's PascalVOCDetectionEvaluator on VOC2007 test: the 11-point metric
            assert ex["use_07_metric"] is True and "voc" in ex
        else:  # pycocotools' COCOeval ran on the detections: bbox, and segm on the predicted masks
            assert ex["n_detections"] > 0 and ex["bbox"]["stats"][0] * 100 == r.metrics["AP"]
            if masks:
                assert ex["segm"]["stats"][0] * 100 == r.metrics["mask_AP"] and "mask_AP50" in r.metrics
    return check


def segmentation(r: ResultRecord) -> None:
    ex = r.extras
    assert ex["head"] == "fcn" and ex["output_stride"] == 8 and ex["train"]["iterations"] == 2
    assert "mIoU" in r.metrics and len(ex["per_class_iou"] if "per_class_iou" in ex else ex["per_class"]) == 19


def ade20k(r: ResultRecord) -> None:
    ex = r.extras
    assert ex["head"] == "fcn" and ex["output_stride"] == 8 and ex["train"]["iterations"] == 2
    assert ex["n_test"] == 2 and len(ex["per_class_iou"] if "per_class_iou" in ex else ex["per_class"]) == 150
    assert "mIoU" in r.metrics


def ade20k_denseclip(r: ResultRecord) -> None:
    ex = r.extras
    assert ex["head"] == "fpn" and ex["output_stride"] == 32 and ex["dilated_stages"] == []
    assert ex["train"]["iterations"] == 2 and ex["n_test"] == 2 and len(ex["per_class_iou"]) == 150
    guide = ex["language_guidance"]
    assert len(guide["class_names"]) == 150 and guide["contexts"] == 8 and guide["aux_weight"] == 0.4
    assert r.checkpoint is not None and r.checkpoint["format"] == "open_clip" and r.checkpoint["positional_grid"] == [16, 16]
    assert "mIoU" in r.metrics


def classification(n_classes: int, n_test: int) -> Check:
    def check(r: ResultRecord) -> None:
        assert r.extras["num_classes"] == n_classes and r.extras["n_test"] == n_test, r.extras
        assert 0 <= r.metrics["top1"] <= 100
    return check


def sgd(recipe: str) -> Check:
    def check(r: ResultRecord) -> None:
        classification(4, 8)(r)
        ex = r.extras
        assert ex["recipe"] == recipe and ex["hyper_parameters"]["epochs"] == 1 and ex["steps"] == 1, ex
        assert r.budget is not None and r.budget.train_steps == 1
    return check


def zero_shot(r: ResultRecord) -> None:
    assert r.extras["n_templates"] == 80 and r.extras["num_classes"] == 4 and r.extras["n_test"] == 8


def retrieval(n_images: int) -> Check:
    def check(r: ResultRecord) -> None:
        assert r.extras["n_images"] == n_images and r.extras["n_captions"] >= 5 * n_images
        assert {"i2t_r1", "t2i_r1", "mean_recall"} <= set(r.metrics)
    return check


def mmeb(r: ResultRecord) -> None:
    from cl_bench.data.image_text.mmeb import MMEB_DATASETS

    assert set(r.extras["per_dataset"]) == set(MMEB_DATASETS)  # the 36, aggregated as VLM2Vec does
    assert {"overall", "classification", "vqa", "retrieval", "grounding", "ind", "ood"} <= set(r.metrics)


def mmvp(r: ResultRecord) -> None:
    assert len(r.extras["per_pattern"]) == 9 and r.extras["n_pairs"] == 18
    assert set(r.metrics) == {"average", "pairs", "statements"}


def truthfulqa(revision: str) -> Check:
    def check(r: ResultRecord) -> None:
        assert r.extras["revision"].startswith(revision) and r.extras["n_questions"] == 8
    return check


def fewshot(r: ResultRecord) -> None:
    assert r.extras["n_test"] == 8 and r.extras["dataset_meta"]["layout"] == "hf-disk"
    assert [p["k"] for p in r.extras["curve"]][:1] == [0] and "accuracy" in r.metrics


def icl_vs_finetune(r: ResultRecord) -> None:
    assert r.extras["n_test"] == 8 and r.extras["dataset_meta"]["layout"] == "hf-disk"
    assert {"icl_ft_agree_k4", "acc_k4", "ft_acc_k4"} <= set(r.metrics)


def tatoeba(r: ResultRecord) -> None:
    assert r.extras["n_pairs"] == 12 and all(v["n"] == 8 for v in r.extras["pairs"].values())


# ------------------------------------------------------------------------------------------ cases
R50 = {"method": "resnet50", "checkpoint": "r50-moco", "arch_params": R50_REDUCED}
DENSE = {**R50, "limit": 2}  # two test images at 800 px: the CPU cost of a dense task is per image
R18 = {"method": "resnet18", "checkpoint": "r18-solo", "arch_params": R18_REDUCED}
CLIP = {"method": "open-clip", "checkpoint": "open-clip"}
LM = {"method": "hf-causal-lm", "checkpoint": "gpt2"}

CASES: list[Case] = [
    Case("voc07-det-c4", **DENSE, check=detection(voc=True, masks=False, head="C4")),
    Case("coco-det-c4-1x", **DENSE, check=detection(voc=False, masks=True, head="C4")),
    # FPN's 256-channel levels at 800 px are the costliest CPU step of the rehearsal: one test image
    Case("coco-det-fpn-1x", **{**DENSE, "limit": 1}, check=detection(voc=False, masks=True, head="FPN")),
    Case("cityscapes-seg-fcn", **DENSE, check=segmentation),
    Case("ade20k-seg-fcn", **DENSE, check=ade20k),
    Case("ade20k-seg-denseclip", method="denseclip-rn50", checkpoint="tiny-rn-clip",
         arch_params={"model": TINY_RN_CLIP_NAME}, limit=2, check=ade20k_denseclip),
    Case("imagenet-linear", **R50, check=classification(4, 8)),
    Case("imagenet-knn", **R50, check=classification(4, 8)),
    Case("imagenet-linear-sgd", **R50, check=sgd("moco")),
    Case("imagenet-linear-sgd-simclr", **R50, check=sgd("simclr")),
    Case("imagefolder-linear", **R50, check=classification(2, 8)),
    Case("cifar10-linear", **R18, check=classification(10, 8)),
    Case("cifar10-knn", **R18, check=classification(10, 8)),
    Case("cifar100-linear", **R18, check=classification(100, 8)),
    Case("cifar100-knn", **R18, check=classification(100, 8)),
    Case("stl10-linear", **R18, check=classification(10, 8)),
    Case("mnist-linear", **R18, check=classification(10, 8)),
    Case("mnist-knn", **R18, check=classification(10, 8)),
    Case("imagenet-zeroshot", **CLIP, check=zero_shot),
    Case("coco-retrieval-5k", **CLIP, check=retrieval(3)),
    Case("flickr30k-retrieval-1k", **CLIP, check=retrieval(2)),
    Case("mmvp-vlm", **CLIP, check=mmvp),
    Case("mmeb", method="hf-vlm-embedder", checkpoint="qwen2-vl", check=mmeb),
    Case("truthfulqa-mc1", **LM, check=truthfulqa("2025-01 revision")),
    Case("truthfulqa-mc2", **LM, root="tqa-parquet", check=truthfulqa("original-817")),
    Case("truthfulqa-mc3", **LM, check=truthfulqa("2025-01 revision")),
    Case("icl-fewshot-sst2", **LM, check=fewshot),
    Case("icl-fewshot-agnews", **LM, check=fewshot),
    Case("icl-fewshot-trec", **LM, check=fewshot),
    Case("icl-fewshot-rte", **LM, check=fewshot),
    Case("icl-vs-finetune-sst2", **LM, check=icl_vs_finetune),
    Case("tatoeba-bitext", method="hf-text-encoder", checkpoint="bert", check=tatoeba),
]
