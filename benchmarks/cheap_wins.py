"""Before/after of the cheap wins of issue #16 (part 7), each measured in one invocation.

    python benchmarks/cheap_wins.py denormals [--n 50000] [--dim 512]
    python benchmarks/cheap_wins.py truthfulqa [--data-root ../shared/data] [--limit 0]
    python benchmarks/cheap_wins.py threads [--repeat 3]

- ``denormals``: the linear probe's λ search (default grid, 9 λ, warm-started, 80/20 split) on
  ``benchmarks/linear_probe.py``'s synthetic features ``n × dim`` (100 classes), with float32 denormals flushed
  around each L-BFGS solve (``flush_denormals``, the default now) and without (before).
  Reported: seconds of each, and whether the chosen λ and every validation accuracy agree.
- ``truthfulqa``: MC1 then MC2 of one model (the tiny-lm architecture: 4-layer GPT-2, 128 wide,
  untrained — scoring cost does not depend on the weights) on the real TruthfulQA files, as a
  sweep runs them in one process: before = every request scored in each task and each context
  encoded once per request; after = log-likelihoods reused across the two tasks and each context
  encoded once per call. Reported: seconds, requests scored, max |Δ metric|.
- ``threads``: ``clbench run --method random --task digits-linear`` (a small model: untrained
  small ResNet, features + probe) in a fresh process with ``--threads 2`` (torch's default on
  this machine) and ``--threads 1`` (what ``auto`` picks here), alternating, best of ``repeat``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def denormals(n: int, dim: int, classes: int = 100) -> None:
    import cl_bench.protocols.linear_probe as lp
    from benchmarks.linear_probe import synthetic

    xtr, ytr, xte, yte = synthetic(n, n // 5, dim, classes)  # the linear_probe benchmark's data
    params = lp.LinearProbeParams()
    flush = lp.flush_denormals
    lp.fit_logistic(torch.from_numpy(xtr[:500]), ytr[:500], 1.0, classes)  # warm-up, outside the timings
    out: dict[str, tuple[float, dict, float]] = {}
    for name, ctx in (("not flushed (before)", contextlib.nullcontext), ("flushed (now)", flush)):
        lp.flush_denormals = ctx  # what minimize() enters around opt.step
        t0 = time.perf_counter()
        scores, extras = lp.linear_probe_scores(xtr, ytr, xte, classes, params, seed=0)
        out[name] = (time.perf_counter() - t0, extras, lp.classification_metrics(scores, yte)["top1"])
    lp.flush_denormals = flush
    (t_old, e_old, a_old), (t_new, e_new, a_new) = out.values()
    print(f"`python benchmarks/cheap_wins.py denormals --n {n} --dim {dim}` — the probe's λ search (9 λ, "
          f"warm-started) on the linear_probe benchmark's synthetic set, {n:,} × {dim}, {classes} classes, 1 thread\n")
    print("| L-BFGS λ search | seconds | chosen λ | test top-1 |\n|---|---|---|---|")
    print(f"| denormals kept (before) | {t_old:.1f} | {e_old['l2']:g} | {a_old:.2f} |")
    print(f"| denormals flushed (now) | {t_new:.1f} | {e_new['l2']:g} | {a_new:.2f} |")
    print(f"\nspeed-up {t_old / t_new:.2f}x; same λ: {e_old['l2'] == e_new['l2']}; same validation accuracy for "
          f"every λ: {e_old['val_top1'] == e_new['val_top1']}")


def truthfulqa(data_root: Path, limit: int) -> None:
    import cl_bench.protocols.multiple_choice as mc
    from cl_bench.data.text.truthfulqa import load_truthfulqa
    from cl_bench.models.lm.tiny_lm import build_tiny_gpt2

    data = load_truthfulqa({"empty_choices": "drop", **({"limit": limit} if limit else {})}, data_root)
    torch.manual_seed(0)
    model = build_tiny_gpt2({"n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 1024,
                             "tokenizer": {"vocab_size": 2048, "corpus": {"sources": ["qa"], "n_qa": 2000}}}).eval()
    asked = [0]
    plain_ll, plain_pair = type(model).loglikelihood, type(model).encode_pair

    def counted(self, requests):
        asked[0] += len(requests)
        return plain_ll(self, requests)

    def before_ll(self, requests):  # 06c5d86: no context memo
        asked[0] += len(requests)
        return self.loglikelihood_tokens([self.truncate_pair(plain_pair(self, c, x)) for c, x in requests])

    res = {}
    for name, ll, key in (("before: every request scored, each context encoded per request", before_ll, None),
                          ("now: log-likelihoods reused across MC1/MC2, contexts encoded once", counted, "tiny")):
        type(model).loglikelihood = ll
        mc._LL_MEMO.clear()
        asked[0] = 0
        t0 = time.perf_counter()
        m1 = np.mean(mc.score_questions_with_predictions(model, data.questions, "mc1", key)[0])
        m2 = np.mean(mc.score_questions_with_predictions(model, data.questions, "mc2", key)[0])
        res[name] = (time.perf_counter() - t0, asked[0], m1, m2)
    type(model).loglikelihood = plain_ll
    (t0_, n0, a1, a2), (t1_, n1, b1, b2) = res.values()
    print(f"`python benchmarks/cheap_wins.py truthfulqa` — {len(data.questions)} questions "
          f"(revision {data.revision}), MC1 then MC2 in one process, 1 thread\n")
    print("| scoring | seconds | requests scored |\n|---|---|---|")
    for name, (t, n, _, _) in res.items():
        print(f"| {name} | {t:.1f} | {n:,} |")
    print(f"\nspeed-up {t0_ / t1_:.2f}x; max |Δ| MC1 {abs(a1 - b1):.2g}, MC2 {abs(a2 - b2):.2g} (fractions)")


def threads(repeat: int) -> None:
    times: dict[int, list[float]] = {2: [], 1: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeat):
            for t in (2, 1):
                cmd = [sys.executable, "-m", "cl_bench.cli", "run", "--method", "random", "--task", "digits-linear",
                       "--threads", str(t), "--results-dir", f"{tmp}/r{t}{r}", "--cache-dir", f"{tmp}/c{t}{r}"]
                env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                               stdout=subprocess.DEVNULL)
                times[t].append(time.perf_counter() - t0)
    print(f"`python benchmarks/cheap_wins.py threads --repeat {repeat}` — `clbench run --method random --task "
          "digits-linear`, fresh process and cold cache each, alternating\n")
    print("| torch threads | best s | all runs s |\n|---|---|---|")
    for t in (2, 1):
        print(f"| {t}{' (torch default here)' if t == 2 else ' (--threads auto here)'} | {min(times[t]):.1f} | "
              f"{', '.join(f'{x:.1f}' for x in times[t])} |")
    print(f"\n2 threads / 1 thread: {min(times[2]) / min(times[1]):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["denormals", "truthfulqa", "threads"])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.what == "denormals":
        denormals(a.n, a.dim)
    elif a.what == "truthfulqa":
        truthfulqa(Path(a.data_root), a.limit)
    else:
        threads(a.repeat)


if __name__ == "__main__":
    main()
