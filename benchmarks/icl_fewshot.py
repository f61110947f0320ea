"""Few-shot ICL scoring: batched, prefix-sharing log-likelihood calls against one-at-a-time scoring.

The requests are one (k, draw) group of icl_fewshot on icl-fewshot-synthetic (k demonstrations
shared by every test prompt, each label word a request). Batched = one ``loglikelihood_tokens``
call over the group (the shared demonstrations encoded once, batches of 32); one-at-a-time = one
call per request (every prompt encoded in full). Same model (the tiny-lm architecture,
untrained: speed does not depend on the weights), same requests, same thread count.

    python benchmarks/icl_fewshot.py --threads 1 [--k 8] [--n-test 100] [--append]
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from cl_bench.data.icl.fewshot_synthetic import load_fewshot_synthetic
from cl_bench.models.lm.tiny_lm import build_tiny_gpt2
from cl_bench.protocols import fewshot_prompts as fp
from cl_bench.protocols.icl_fewshot import fixed_subsample, pairs_for


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--append", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = build_tiny_gpt2({"n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 512}).eval()
    data = load_fewshot_synthetic({"rule": "sentiment-keywords"})
    tests = fixed_subsample(data.test.examples, a.n_test)
    pool = fp.demo_pool(data, tests)
    demos = [data.train.examples[i] for i in fp.draw_demos(pool, a.k, 0, 0)]
    pairs = pairs_for(model, data, fp.demo_block(data, demos), tests)
    tokens = sum(len(c) + len(x) for c, x in pairs)
    model.loglikelihood_tokens(pairs[:4])  # warm-up

    t0 = time.perf_counter()
    batched = [ll for ll, _ in model.loglikelihood_tokens(pairs)]
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [model.loglikelihood_tokens([p])[0][0] for p in pairs]
    t_single = time.perf_counter() - t0
    diff = float(np.max(np.abs(np.array(batched) - np.array(single))))

    lines = [
        f"## icl_fewshot scoring ({date.today()}, {platform.machine()}, torch {torch.__version__}, {a.threads} thread(s))",
        "",
        (f"`python benchmarks/icl_fewshot.py --threads {a.threads} --k {a.k} --n-test {a.n_test}` — tiny-lm architecture "
        f"(4 layers, 128 wide), icl-fewshot-synthetic, k = {a.k} shared demonstrations, {len(pairs)} requests, "
        f"{tokens} prompt+continuation tokens."),
        "",
        "| scoring | seconds | tokens/s |",
        "| --- | --- | --- |",
        f"| batched, shared prefix (cl_bench) | {t_batched:.2f} | {tokens / t_batched:,.0f} |",
        f"| one request at a time | {t_single:.2f} | {tokens / t_single:,.0f} |",
        "",
        f"speed-up {t_single / t_batched:.1f}x; max |log-likelihood difference| {diff:.1e}",
        "",
    ]
    print("\n".join(lines))
    if a.append:
        with (Path(__file__).parent / "RESULTS.md").open("a") as fh:
            fh.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
