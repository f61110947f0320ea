"""PreciseBN (Wu & Johnson, arXiv 2105.07576; detectron2's ``hooks.PreciseBN`` through fvcore's
``update_bn_stats``): after training, replace every BatchNorm's running statistics by their
average over ``num_iters`` training batches, the model in train mode and without gradients.

Per batch each BN layer (momentum set to 1, so its running buffers hold exactly this batch's
mean and unbiased variance) contributes to the running average ``avg += (batch - avg) / (i + 1)``;
at the end the averages become the running statistics and the momenta are restored. The
exponential moving average that training leaves behind is dominated by the last few dozen
batches, under weights that were still moving; the average is over a fixed model. MoCo's
``Base-RCNN-C4-BN.yaml`` enables it (``TEST.PRECISE_BN.ENABLED: True``, ``NUM_ITER`` 200).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches: Iterator[Any], num_iters: int,
                    forward: Callable[[nn.Module, Any], Any]) -> int:
    """Recompute the running statistics of ``model``'s BatchNorm layers over ``num_iters`` batches
    (``forward(model, batch)`` runs one); returns how many layers were updated (frozen BN —
    ``FrozenBatchNorm2d`` — has no batch statistics and is left alone)."""
    layers = [m for m in model.modules() if isinstance(m, BN_TYPES) and m.track_running_stats]
    if not layers or num_iters <= 0:
        return 0
    was_training = model.training
    model.train()
    momenta = [bn.momentum for bn in layers]
    for bn in layers:
        bn.momentum = 1.0
    means = [torch.zeros_like(bn.running_mean) for bn in layers]
    variances = [torch.zeros_like(bn.running_var) for bn in layers]
    try:
        for i in range(num_iters):
            forward(model, next(batches))
            for k, bn in enumerate(layers):
                means[k] += (bn.running_mean - means[k]) / (i + 1)
                variances[k] += (bn.running_var - variances[k]) / (i + 1)
    finally:
        for bn, m in zip(layers, momenta):
            bn.momentum = m
        model.train(was_training)
    for bn, mean, var in zip(layers, means, variances):
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    return len(layers)
