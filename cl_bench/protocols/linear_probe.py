"""``linear_probe``: multinomial logistic regression on frozen, standardized features.

The solver (objective, L-BFGS, λ selection) is :mod:`cl_bench.protocols.linear_probe_solver`; when
the features would not fit in memory on the device, the same objective is minimised with the data
term streamed block by block from the feature cache (:mod:`cl_bench.protocols.linear_probe_stream`);
``extras["solver"]`` says which ran.
"""

from __future__ import annotations

from typing import Any

import torch

from cl_bench.budget import probe_budget
from cl_bench.components import register
from cl_bench.data.image.types import ImageClassificationData
from cl_bench.memory_budget import budget_bytes
from cl_bench.protocols.base import Protocol, ProtocolResult, RunContext, chance_facts
from cl_bench.protocols.linear_probe_solver import LinearProbeParams, classification_result, linear_probe_scores
from cl_bench.protocols.linear_probe_stream import full_batch_bytes, streamed_probe_scores


def _run(model: Any, data: ImageClassificationData, params: LinearProbeParams, ctx: RunContext) -> ProtocolResult:
    train = ctx.stored_features(model, data.train)
    test = ctx.stored_features(model, data.test)
    on_device, on_host = full_batch_bytes(len(train), len(test), train.shape[1], data.num_classes, ctx.device.type)
    if on_device <= budget_bytes(ctx.device) and on_host <= budget_bytes(torch.device("cpu")):
        scores, extras = linear_probe_scores(
            train.load(), data.train.labels, test.load(), data.num_classes, params, ctx.seed, ctx.device
        )
        extras["solver"] = "L-BFGS, full batch"
    else:
        scores, extras = streamed_probe_scores(
            train, data.train.labels, test, data.num_classes, params, ctx.seed, ctx.device
        )
    return classification_result(scores, data.test.labels, {**chance_facts(data), **extras})


PROTOCOL = register("protocol", "linear_probe", params=LinearProbeParams)(
    Protocol(requires="image_encoder", run=_run, budget=probe_budget)
)
