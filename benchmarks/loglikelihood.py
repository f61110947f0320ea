"""TruthfulQA MC1/MC2: our CausalLM scoring vs lm-evaluation-harness's HF backend, same model, same data.

    python benchmarks/loglikelihood.py [--data-root ../shared/data] [--limit N] [--threads 1]

The model is tiny-lm (obtained through cl_bench.obtain: trained once, then cached under
$CLBENCH_CACHE), saved as a Hugging Face directory (weights + tokenizer) that lm-eval loads with
its HF backend. The questions are the real TruthfulQA files under DATA_ROOT/truthfulqa/ (empty
choices dropped), written in the Hugging Face ``multiple_choice`` parquet layout so that lm-eval
reads them through a local task config that ``include``s its own truthfulqa_mc1/mc2 YAML
(only the dataset source is overridden: no download). Both sides score every question; the
script checks per-question MC1/MC2 agree to 1e-4, and prints wall times and their ratio
(appended to benchmarks/RESULTS.md with --record). Needs ``pip install lm-eval accelerate``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cl_bench.cache import Cache
from cl_bench.data.text.truthfulqa import load_truthfulqa
from cl_bench.obtain import obtain_model
from cl_bench.protocols.multiple_choice import QA_PREAMBLE, score_questions
from cl_bench.registry import Registry


def write_parquet(questions: list, folder: Path) -> Path:
    rows = [{"question": q.question,
             "mc1_targets": {"choices": list(q.mc1.choices), "labels": list(q.mc1.labels)},
             "mc2_targets": {"choices": list(q.mc2.choices), "labels": list(q.mc2.labels)}} for q in questions]
    path = folder / "validation.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def write_task_configs(folder: Path, parquet: Path) -> list[str]:
    import lm_eval

    installed = Path(lm_eval.__file__).parent / "tasks" / "truthfulqa"
    names = []
    for target in ("mc1", "mc2"):
        name = f"clbench_truthfulqa_{target}"
        (folder / f"{name}.yaml").write_text(
            f"include: {installed / f'truthfulqa_{target}.yaml'}\n"
            f"task: {name}\n"
            "tag: []\n"
            "dataset_path: parquet\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {parquet}\n"
        )
        names.append(name)
    return names


def run_lm_eval(model_dir: Path, task_dir: Path, names: list[str], batch_size: int) -> tuple[dict, float]:
    from lm_eval import evaluator
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=batch_size)
    t0 = time.perf_counter()
    out = evaluator.simple_evaluate(model=lm, tasks=names, task_manager=TaskManager(include_path=str(task_dir)),
                                    log_samples=True, bootstrap_iters=0)
    return out, time.perf_counter() - t0


def per_question_reference(samples: list[dict], target: str) -> list[float]:
    ordered = sorted(samples, key=lambda s: s["doc_id"])
    return [float(s["acc"]) for s in ordered]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--record", action="store_true", help="append the numbers to benchmarks/RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    data = load_truthfulqa({"empty_choices": "drop", "limit": args.limit}, Path(args.data_root))
    got = obtain_model(Registry().method("tiny-lm"), data, seed=0, device=torch.device("cpu"), cache=Cache())
    model = got.model
    model.batch_size = args.batch_size
    print(f"model tiny-lm ({got.source}{', cached' if got.reused else ''}); data {data.revision}, "
          f"{len(data.questions)} questions")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model.save_pretrained(tmp_path / "model")
        names = write_task_configs(tmp_path, write_parquet(data.questions, tmp_path))

        t0 = time.perf_counter()
        ours = {t: score_questions(model, data.questions, t)[0] for t in ("mc1", "mc2")}
        ours_s = time.perf_counter() - t0

        ref, ref_s = run_lm_eval(tmp_path / "model", tmp_path, names, args.batch_size)
        rendered = ref["samples"][names[0]][0]["arguments"][0][0] if ref.get("samples") else ""
        assert rendered.startswith(QA_PREAMBLE), "lm-eval's prompt differs from ours"

    lines = []
    worst = 0.0
    for target, name in zip(("mc1", "mc2"), names):
        theirs = per_question_reference(ref["samples"][name], target)
        diff = float(np.max(np.abs(np.asarray(theirs) - np.asarray(ours[target]))))
        worst = max(worst, diff)
        lines.append(f"| {target} | {100 * np.mean(ours[target]):.4f} | {100 * np.mean(theirs):.4f} | {diff:.2e} |")
    ratio = ref_s / ours_s
    table = ["| metric | cl_bench | lm-eval | max per-question abs diff |", "| --- | --- | --- | --- |", *lines]
    timing = (f"wall time, MC1+MC2 over {len(data.questions)} questions, {args.threads} thread(s), batch "
              f"{args.batch_size}: cl_bench {ours_s:.1f} s, lm-eval HF backend {ref_s:.1f} s -> {ratio:.2f}x")
    print("\n".join(table))
    print(timing)
    if worst > 1e-4:
        raise SystemExit(f"FIDELITY FAILURE: per-question difference {worst:.2e} > 1e-4")
    if args.record:
        import lm_eval

        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(
                f"\n## loglikelihood (TruthfulQA MC1/MC2, tiny-lm vs lm-evaluation-harness {lm_eval.__version__})\n\n"
                f"`python benchmarks/loglikelihood.py --threads {args.threads} --record` — "
                f"{data.revision}; {platform.processor() or platform.machine()}, torch {torch.__version__}\n\n"
                + "\n".join(table) + f"\n\n{timing}\n"
            )


if __name__ == "__main__":
    main()
