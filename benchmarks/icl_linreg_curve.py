"""Learning curve of an ICL sequence model on icl-linreg, on VALIDATION prompts (fresh prompts
of seed 10,001; the task's test prompts are seed 0 and are never read here).

Trains the method's icl-linreg model (its ``by_task`` entry applied) the way ``icl-pretrain``
does — fresh prompts every step, Garg et al.'s curriculum, the recipe's optimizer, warmup and
schedule, gradient clipping — and prints every ``--eval-every`` steps: step, wall seconds,
mse_avg, mse at the last position, mse at position d (squared error / d, as the protocol),
with least squares and averaging on the same prompts. The overrides are the probes that chose
the budget (see baselines/_base/icl-sequence-model.yaml). Usage::

    python benchmarks/icl_linreg_curve.py --method icl-transformer [--layers 2] [--steps 15000]
        [--steps-per-epoch 600] [--lr 1e-3] [--schedule constant] [--eval-every 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cl_bench import components
from cl_bench.data.icl.linreg import sample_prompts
from cl_bench.methods.lm.icl_pretrain import Curriculum, ICLPretrainParams
from cl_bench.methods.trainer import build_optimizer, lr_at_step
from cl_bench.protocols.icl_regression import averaging, error_curve, least_squares
from cl_bench.registry import Registry

VALIDATION_SEED = 10_001


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="icl-transformer")
    ap.add_argument("--layers", type=int, help="override the arch's n_layer")
    ap.add_argument("--steps", type=int, help="override the run's length (default: the recipe's)")
    ap.add_argument("--steps-per-epoch", type=int,
                    help="override the recipe's steps_per_epoch (the run = epochs x this, warmup = warmup_epochs x this)")
    ap.add_argument("--lr", type=float, help="override the regression lr")
    ap.add_argument("--schedule", choices=["cosine", "constant"], help="override the recipe's schedule")
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.steps_per_epoch is not None and args.steps_per_epoch < 1:
        ap.error(f"--steps-per-epoch must be >= 1, got {args.steps_per_epoch}")
    torch.set_num_threads(1)
    reg = Registry()
    method = reg.method(args.method).for_task("icl-linreg")
    task = reg.task("icl-linreg")
    d, n = task.dataset.params["n_dims"], task.dataset.params["n_points"]
    arch = dict(method.arch.params, **({"n_layer": args.layers} if args.layers else {}))
    torch.manual_seed(args.seed)
    model = components.get("arch", method.arch.name)(arch, input_kind="vectors", n_dims=d, max_positions=2 * n)
    p = ICLPretrainParams(**dict(method.train.params, **(
        {"steps_per_epoch": args.steps_per_epoch} if args.steps_per_epoch is not None else {})))
    recipe = method.train.model_copy(update={k: v for k, v in {
        "lr": args.lr or p.regression_lr or method.train.lr, "schedule": args.schedule}.items() if v is not None})
    total = args.steps or recipe.epochs * p.steps_per_epoch
    warmup = min(recipe.warmup_epochs * p.steps_per_epoch, total)
    cur = p.curriculum or Curriculum(dims_start=d, points_start=n)

    vx, vy, _ = sample_prompts(torch.Generator().manual_seed(VALIDATION_SEED), 1280, n, d)
    x64, y64 = vx.double().numpy(), vy.double().numpy()
    ref = {name: error_curve(f(x64, y64), y64, d) for name, f in (("least_squares", least_squares), ("averaging", averaging))}
    print("validation", {k: round(float(v.mean()), 4) for k, v in ref.items()}, flush=True)

    params = [q for q in model.parameters() if q.requires_grad]
    opt = build_optimizer(params, recipe)
    gen = torch.Generator().manual_seed(args.seed)
    curve, t0 = [], time.perf_counter()
    model.train()
    for step in range(total):
        dims, points = cur.at(step, d, n)
        xs, ys, _ = sample_prompts(gen, recipe.batch_size, points, d, dims)
        loss = (model.regress(xs, ys) - ys).square().mean()
        for g in opt.param_groups:
            g["lr"] = lr_at_step(step, total, warmup, recipe)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, p.grad_clip)
        opt.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == total:
            model.eval()
            with torch.no_grad():
                e = error_curve(model.regress(vx, vy).double().numpy(), y64, d)
            model.train()
            curve.append([step + 1, round(time.perf_counter() - t0, 1), *(round(float(v), 4) for v in (e.mean(), e[-1], e[d]))])
            print(*curve[-1], flush=True)
    print(json.dumps({"method": args.method, "arch": arch, "lr": recipe.lr, "schedule": recipe.schedule,
                      "steps": total, "curve": curve}))


if __name__ == "__main__":
    main()
