"""The one training loop: hook order, where it stops, the per-step finiteness check, the
updates it makes (against a hand-written SGD loop) and the EMA of declared momentum pairs
(against BYOL's formula written out here)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from cl_bench.errors import ClBenchError
from cl_bench.methods.momentum import MomentumPairs, momentum_copy
from cl_bench.methods.trainer import EpochLog, fit


def _problem(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x, x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.1


def test_hooks_run_in_the_documented_order_with_the_step_lr() -> None:
    model = nn.Linear(3, 1).double()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = _problem()
    events: list[str] = []
    lrs: list[float] = []

    def batches(epoch: int) -> Iterator[int]:
        events.append(f"epoch{epoch}")
        for b in range(2):
            events.append("draw")
            yield b

    def views(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        events.append("views")
        return x[b * 6:(b + 1) * 6], y[b * 6:(b + 1) * 6]

    def loss(v: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        events.append("loss")
        return (model(v[0])[:, 0] - v[1]).square().mean()

    def before(step: int) -> None:
        events.append("before")
        assert model.weight.grad is not None  # after backward, before the update
        lrs.append(opt.param_groups[0]["lr"])

    def end(e: EpochLog) -> None:
        events.append(f"end{e.index}:{len(e.losses)}")

    log = fit(opt, total=10, epochs=2, batches=batches, views=views, loss=loss, lr_at=lambda s: 0.1 / (s + 1),
              before_step=[before], after_step=[lambda s: events.append(f"after{s}")], end_epoch=end)
    step = ["draw", "views", "loss", "before"]
    assert events == ["epoch0", *step, "after0", *step, "after1", "end0:2",
                      "epoch1", *step, "after2", *step, "after3", "end1:2"]
    assert lrs == pytest.approx([0.1, 0.05, 0.1 / 3, 0.025])
    assert log.steps == 4 and [e.index for e in log.epochs] == [0, 1]


def test_stops_at_total_mid_epoch_without_drawing_a_batch_past_it() -> None:
    model = nn.Linear(3, 1).double()
    x, y = _problem()
    drawn: list[int] = []

    def batches(epoch: int) -> Iterator[int]:
        for i in range(4):
            drawn.append(epoch * 4 + i)
            yield i

    log = fit(torch.optim.SGD(model.parameters(), lr=0.01), total=6, batches=batches,
              loss=lambda i: (model(x[i:i + 3])[:, 0] - y[i:i + 3]).square().mean())
    assert log.steps == 6 and drawn == [0, 1, 2, 3, 4, 5]  # epochs=None: as many epochs as it takes
    assert [len(e.losses) for e in log.epochs] == [4, 2]


def test_updates_equal_a_hand_written_sgd_loop_with_clipping_hook() -> None:
    x, y = _problem(8)
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    w, b = model.weight.detach().clone()[0], model.bias.detach().clone()[0]
    lr = [0.05, 0.1, 0.02]
    fit(torch.optim.SGD(model.parameters(), lr=1.0), total=3, batches=lambda e: range(3),
        loss=lambda i: (model(x)[:, 0] - y).square().mean(), lr_at=lambda s: lr[s],
        before_step=[lambda s: nn.utils.clip_grad_norm_(model.parameters(), 1.0)])
    for s in range(3):  # the same three steps, written out: d/dw mean (xw + b - y)^2, clipped to norm 1
        r = x @ w + b - y
        gw, gb = 2 * (x * r[:, None]).mean(0), 2 * r.mean()
        norm = torch.sqrt(gw.square().sum() + gb**2)
        scale = min(1.0, 1.0 / (float(norm) + 1e-6))
        w, b = w - lr[s] * gw * scale, b - lr[s] * gb * scale
    torch.testing.assert_close(model.weight.detach()[0], w)
    torch.testing.assert_close(model.bias.detach()[0], b)


def test_check_step_raises_before_the_update() -> None:
    model = nn.Linear(3, 1).double()
    before = model.weight.detach().clone()
    x, _ = _problem()
    with pytest.raises(ClBenchError, match="became nan at step 0") as e:
        fit(torch.optim.SGD(model.parameters(), lr=0.1), total=3, batches=lambda e: range(3),
            loss=lambda i: model(x).sum() * float("nan"), check_step=lambda s, v: f"loss became {v} at step {s}")
    assert "\n" not in str(e.value)
    assert torch.equal(model.weight.detach(), before)


def test_named_terms_are_logged_per_step() -> None:
    model = nn.Linear(3, 1).double()
    x, y = _problem()

    def loss(i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        a = (model(x)[:, 0] - y).square().mean()
        return a + 1.0, {"mse": a}

    log = fit(torch.optim.SGD(model.parameters(), lr=0.01), total=2, batches=lambda e: range(2), loss=loss)
    assert [float(p["mse"]) + 1 for p in log.epochs[0].parts] == pytest.approx(log.losses())


def _byol_tau(k: int, total: int, base: float) -> float:
    """BYOL (arXiv 2006.07733, sec. 3.2): tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2."""
    return 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_momentum_pairs_follow_the_ema_formula(schedule: str) -> None:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).double()
    target = momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    ema = MomentumPairs([(online, target)], base=0.9, total=5, schedule=schedule)
    expected = [p.detach().clone() for p in target.parameters()]
    for step in range(5):
        with torch.no_grad():  # the online network moves (as an optimizer step would)
            for p in online.parameters():
                p.add_(torch.randn_like(p))
            online[1].running_mean.add_(1.0)
        tau = _byol_tau(step, 5, 0.9) if schedule == "cosine" else 0.9
        expected = [tau * e + (1 - tau) * p.detach() for e, p in zip(expected, online.parameters())]
        ema(step)
        for e, t in zip(expected, target.parameters()):
            torch.testing.assert_close(t, e)
        torch.testing.assert_close(target[1].running_mean, online[1].running_mean)  # buffers copied


def test_momentum_pairs_can_leave_buffers_alone() -> None:
    online = nn.BatchNorm1d(3)
    target = momentum_copy(online)
    with torch.no_grad():
        online.running_mean.add_(1.0)
    MomentumPairs([(online, target)], base=0.5, schedule="constant", copy_buffers=False)(0)
    assert torch.equal(target.running_mean, torch.zeros(3))
