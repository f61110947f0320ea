"""The few-shot ICL measurements with one trained model and several demonstration seeds.

``clbench run --seeds 0,1,2`` trains one model per seed; this script keeps the model of
``--model-seed`` (trained or reused from the cache, as ``clbench run`` would) and runs a task's
protocol with run seeds ``--seeds`` (which only change the demonstration draws), printing
mean ± std over seeds of every metric, and the k-shot curve.

    python benchmarks/icl_fewshot_curves.py --method tiny-lm --task icl-fewshot-synthetic --seeds 0,1,2
    python benchmarks/icl_fewshot_curves.py --method tiny-lm-icl --task icl-fewshot-cpt-synthetic --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cl_bench import components
from cl_bench.cache import Cache
from cl_bench.obtain import obtain_model, seed_everything
from cl_bench.protocols.base import RunContext
from cl_bench.registry import Registry
from cl_bench.params import validate_params


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--model-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    reg = Registry()
    task, method = reg.task(a.task), reg.method(a.method)
    protocol = components.get("protocol", task.protocol.name)
    params = validate_params(protocol.params, task.protocol.params, task.source)
    data = components.get("dataset", task.dataset.name)(task.dataset.params, None)
    device = torch.device("cpu")
    got = obtain_model(method, data, seed=a.model_seed, device=device, cache=Cache())
    per_seed = []
    for s in [int(x) for x in a.seeds.split(",")]:
        seed_everything(s)
        t0 = time.perf_counter()
        res = protocol.run(got.model, data, params, RunContext(device, s, lambda *x: None))
        per_seed.append(res.metrics)
        print(f"seed {s}: {time.perf_counter() - t0:.1f}s " + " ".join(
            f"{k}={v:.1f}" for k, v in res.metrics.items() if not k.startswith(("std", "cpt_std", "pt_std"))))
    print(f"\n{a.method} on {a.task} (model seed {a.model_seed}, fingerprint {got.fingerprint[:12]}), "
          f"mean ± std over demonstration seeds {a.seeds}; chance {res.extras['chance']:.1f}")
    for k in per_seed[0]:
        vals = np.array([m[k] for m in per_seed])
        print(f"  {k:16s} {vals.mean():6.1f} ± {vals.std():4.1f}")
    print("  dropped ks:", res.extras["dropped_ks"])


if __name__ == "__main__":
    main()
