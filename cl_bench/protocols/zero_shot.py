"""Zero-shot classification (protocol ``zero_shot``), as CLIP and LAION's CLIP_benchmark do it.

Each class c gets the prompts ``template.format(name_c)`` for every template (the task's
``templates``, else the dataset's). The class embedding is the mean of the L2-normalised
prompt embeddings, L2-normalised again (template ensembling). An image is scored against
every class by the cosine of its normalised embedding with the class embedding.

- ``top1``: the highest-scoring class is the label. Ties go to the lower class index.
- ``top5`` (only with more than 5 classes): the label is among the 5 best, classes ordered by
  decreasing score and then by class index (so the rank of the label is #{c: s_c > s_y} +
  #{c < y: s_c = s_y}); with <= 5 classes top-5 is always 100 and is not reported.
- ``mean_per_class_recall``: the mean over classes of the per-class top-1 accuracy (classes
  without test images are left out); per-class accuracies are in ``extras``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, field_validator

from cl_bench.budget import first_test
from cl_bench.components import register
from cl_bench.data.image_text.types import CaptionedImageData
from cl_bench.data.text.types import TextSplit
from cl_bench.errors import ClBenchError
from cl_bench.predictions import Predictions
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext


class ZeroShotParams(ProtocolParams):
    templates: list[str] | None = Field(default=None, min_length=1)  # None: the dataset's

    @field_validator("templates")
    @classmethod
    def _has_slot(cls, v: list[str] | None) -> list[str] | None:
        for t in v or []:
            if t.count("{}") != 1:
                raise ValueError(f"template {t!r} must contain exactly one '{{}}' for the class name")
        return v


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_embeddings(prompt_emb: np.ndarray, n_classes: int, n_templates: int) -> np.ndarray:
    """[C*T, D] prompt embeddings (class-major) -> [C, D] ensembled class embeddings."""
    e = _unit(prompt_emb).reshape(n_classes, n_templates, -1)
    return _unit(e.mean(axis=1))


def label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """0-based rank of each label among the classes (decreasing score, ties: lower index first)."""
    s_y = scores[np.arange(len(labels)), labels][:, None]
    idx = np.arange(scores.shape[1])[None, :]
    return ((scores > s_y) | ((scores == s_y) & (idx < labels[:, None]))).sum(axis=1)


def zero_shot_scores(scores: np.ndarray, labels: np.ndarray, class_names: list[str]) -> ProtocolResult:
    n_classes = len(class_names)
    labels = np.asarray(labels, dtype=np.int64)
    ranks = label_ranks(scores, labels)
    metrics = {"top1": float(100.0 * np.mean(ranks < 1))}
    if n_classes > 5:
        metrics["top5"] = float(100.0 * np.mean(ranks < 5))
    per_class: dict[str, float] = {}
    for c, name in enumerate(class_names):
        m = labels == c
        if m.any():
            per_class[name] = float(100.0 * np.mean(ranks[m] < 1))
    metrics["mean_per_class_recall"] = float(np.mean(list(per_class.values())))
    pred = np.argmax(scores, axis=1)
    return ProtocolResult(metrics=metrics, extras={
        "per_class_top1": per_class, "n_test": len(labels), "num_classes": n_classes,
        "prediction_counts": np.bincount(pred, minlength=n_classes).tolist(),
    }, predictions=Predictions(item=np.arange(len(labels)), pred=pred, correct=ranks < 1, target=labels))


def run_zero_shot(model: Any, data: Any, params: ZeroShotParams, ctx: RunContext) -> ProtocolResult:
    if not isinstance(data, CaptionedImageData):
        raise ClBenchError(f"protocol zero_shot needs labelled images with class names (e.g. dataset "
                           f"scenes-captions or imagenet-zeroshot), got {type(data).__name__}")
    names = data.class_names
    templates = params.templates or data.templates
    if not names:
        raise ClBenchError(f"dataset '{data.name}' has no class names: zero-shot classification needs them")
    if not templates:
        raise ClBenchError(f"dataset '{data.name}' has no prompt templates: give protocol.params.templates "
                           "(e.g. ['a photo of a {}.'])")
    if data.test.labels is None:
        raise ClBenchError(f"dataset '{data.name}' has no labels on its test split")
    labels = data.test.labels
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise ClBenchError(f"dataset '{data.name}': labels must lie in 0..{len(names) - 1}")
    prompts = TextSplit([t.format(n) for n in names for t in templates])
    w = class_embeddings(ctx.features(model, prompts), len(names), len(templates))
    img = _unit(ctx.features(model, data.test.images))
    if not (np.isfinite(img).all() and np.isfinite(w).all()):
        raise ClBenchError("embeddings contain NaN or inf: the model's outputs are broken")
    result = zero_shot_scores(img @ w.T, labels, list(names))
    result.extras["n_templates"] = len(templates)
    result.extras["templates"] = list(templates)
    return result


register("protocol", "zero_shot")(Protocol(
    "zero_shot", requires="image_text", params=ZeroShotParams, run=run_zero_shot, data_kind="captioned_images",
    budget=first_test("test images")))
