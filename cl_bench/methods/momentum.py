"""EMA "momentum" copies declared as data (the idea of solo-learn's ``BaseMomentumMethod.momentum_pairs``
and ``MomentumUpdater``): an objective lists (online, momentum copy) module pairs; the training
loop (:func:`cl_bench.methods.trainer.fit`) applies :class:`MomentumPairs` after every optimizer step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


def momentum_at(step: int, total: int, base: float) -> float:
    """BYOL's EMA coefficient: ``1 - (1 - base) * (cos(π step / total) + 1) / 2`` (base -> 1)."""
    return 1 - (1 - base) * (math.cos(math.pi * step / max(1, total)) + 1) / 2


@dataclass
class MomentumPairs:
    """An ``after_step`` hook: every (online, momentum) module pair gets
    ``θ_m <- m θ_m + (1 - m) θ_online`` with ``m`` = ``base`` (``schedule: constant``) or
    :func:`momentum_at` of the step (``cosine``, rising to 1 at ``total``); with ``copy_buffers``
    the momentum copy also takes the online buffers (BN statistics) as they are."""

    pairs: list[tuple[nn.Module, nn.Module]]
    base: float
    total: int = 1
    schedule: Literal["cosine", "constant"] = "cosine"
    copy_buffers: bool = True

    def __call__(self, step: int) -> None:
        m = momentum_at(step, self.total, self.base) if self.schedule == "cosine" else self.base
        with torch.no_grad():
            for online, target in self.pairs:
                for po, pt in zip(online.parameters(), target.parameters()):
                    pt.mul_(m).add_(po.detach(), alpha=1 - m)
                if self.copy_buffers:
                    for bo, bt in zip(online.buffers(), target.buffers()):
                        bt.copy_(bo)


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` (the momentum side of a pair)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target

