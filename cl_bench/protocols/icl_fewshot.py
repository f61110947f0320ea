"""``icl_fewshot``: k-shot in-context classification curves for any causal LM.

For every shot count k in ``ks``, ``draws`` demonstration sets and up to ``orders`` distinct
orders of each (sampling and exclusion rules: ``fewshot_prompts``) build one prompt per test
example: instruction + k demonstrations + the query. Each label word is scored as the
continuation ``target_delimiter + word`` by its summed log-likelihood (lm-evaluation-harness's
``acc`` of a multiple-choice task); the prediction is the best-scoring label (ties: the first).
With ``calibrate`` the contextual-calibration accuracy is reported too. A k whose prompts do not
fit the model's context (``max_length``) is left out of the curve and recorded in the extras.

Metrics, percent, per k: ``acc_k<k>`` (mean over every draw × order), ``std_k<k>`` (their
standard deviation, ddof 0), ``spread_k<k>`` (order sensitivity: the mean over draws of max − min
accuracy over the orders of that draw); ``acc_cal_k<k>`` / ``spread_cal_k<k>`` when calibrating;
``accuracy`` = ``acc_k<primary_k>``. With ``adapt`` including ``cpt`` / ``prompt-tuning``, at each k
of ``adapt_ks`` the same draws (and orders, for CPT) are also scored after context-aware prompt
tuning (``cpt_acc_k<k>``, ``cpt_std_k<k>``, ``cpt_spread_k<k>``) and after prompt tuning on the same
k examples (``pt_acc_k<k>``, ``pt_std_k<k>``; order-free, one per draw) — see ``methods/cpt.py``.
With ``finetune`` (ICL vs gradient descent on a real LM, ``methods/fewshot_finetune.py``), every
draw × order is also learned by fine-tuning the model's weights on the same k examples in the
same order: ``ft_acc_k<k>``, ``ft_std_k<k>``, ``ft_spread_k<k>`` (GD's order sensitivity, as
``spread``), and ICL against GD on the same draw and order: ``icl_ft_agree_k<k>`` (% same
prediction), ``icl_ft_kl_k<k>`` (KL of the label distributions), ``icl_ft_update_cos_k<k>`` (cosine
of the two changes of the output log-distribution from the zero-shot model's) and
``icl_ft_order_corr_k<k>`` (whether the orders that help ICL help GD).
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from cl_bench.budget import Budget, Budgeted
from cl_bench.components import register
from cl_bench.data.icl.fewshot_text import FewShotExample, FewShotTextData
from cl_bench.data.subsets import replace_test
from cl_bench.errors import ClBenchError
from cl_bench.methods.lm.cpt import FORMAT, INPUT, LABEL, CPTParams, PromptTuningParams
from cl_bench.methods.lm.fewshot_finetune import FinetuneParams
from cl_bench.predictions import Predictions
from cl_bench.protocols import fewshot_prompts as fp
from cl_bench.protocols.base import Protocol, ProtocolParams, ProtocolResult, RunContext


class ICLFewShotParams(ProtocolParams):
    ks: list[int] = Field(default_factory=lambda: [0, 1, 2, 4, 8, 16, 32], min_length=1)
    primary_k: int = 4
    draws: int = Field(default=3, ge=1)
    orders: int = Field(default=2, ge=1)
    n_test: int | None = Field(default=200, ge=1)  # a fixed subsample of the test split (None: all)
    calibrate: bool = False
    content_free: list[str] = Field(default_factory=lambda: ["N/A", "", "[MASK]"], min_length=1)
    adapt: list[Literal["icl", "cpt", "prompt-tuning", "finetune"]] = Field(default_factory=lambda: ["icl"])
    adapt_ks: list[int] = Field(default_factory=lambda: [4, 8])
    cpt: CPTParams = Field(default_factory=CPTParams)
    prompt_tuning: PromptTuningParams = Field(default_factory=PromptTuningParams)
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)

    @model_validator(mode="after")
    def _check(self) -> ICLFewShotParams:
        if any(k < 0 for k in self.ks) or len(set(self.ks)) != len(self.ks):
            raise ValueError(f"ks must be distinct non-negative shot counts, got {self.ks}")
        if self.primary_k not in self.ks:
            raise ValueError(f"primary_k {self.primary_k} is not one of ks {self.ks}")
        if "icl" not in self.adapt:
            raise ValueError("adapt must include icl (the reference every adaptation is compared with)")
        if set(self.adapt) != {"icl"} and not set(self.adapt_ks) <= set(self.ks):
            raise ValueError(f"adapt_ks {self.adapt_ks} must be among ks {self.ks}")
        return self


def orderings(demos: list[int], seed: int, draw: int, n_orders: int) -> list[list[int]]:
    """Up to ``n_orders`` distinct orders of ``demos`` (order 0 as drawn)."""
    n = min(n_orders, math.factorial(len(demos)))
    out, seen, o = [], set(), 0
    while len(out) < n:
        cand = fp.reorder(demos, seed, draw, o)
        if tuple(cand) not in seen:
            seen.add(tuple(cand))
            out.append(cand)
        o += 1
    return out


def fixed_subsample(examples: list[FewShotExample], n: int | None) -> list[FewShotExample]:
    """The evaluated examples: the same for every seed, so seeds vary only the demonstrations."""
    return [examples[i] for i in fixed_subsample_indices(len(examples), n)]


def fixed_subsample_indices(n_examples: int, n: int | None) -> np.ndarray:
    """Test-split indices of :func:`fixed_subsample`, in its order."""
    if n is None or n >= n_examples:
        return np.arange(n_examples)
    return np.sort(np.random.default_rng(12345).permutation(n_examples)[:n])


def score_matrix(model: Any, pairs: list[tuple[list[int], list[int]]], n_classes: int) -> np.ndarray:
    """[N, C] summed log-likelihoods, one batched call (the shared demonstrations encoded once)."""
    lls = model.loglikelihood_tokens(pairs)
    return np.array([ll for ll, _ in lls], dtype=np.float64).reshape(-1, n_classes)


def pairs_for(model: Any, data: FewShotTextData, block: str, queries: list[FewShotExample]) -> list[tuple[list[int], list[int]]]:
    return [model.encode_pair(block + data.query_text(q), data.continuation(c))
            for q in queries for c in range(data.num_classes)]


def context_segments(data: FewShotTextData, demos: list[FewShotExample]) -> list[tuple[str, int]]:
    """The demonstration block as (text, token type) pieces; their concatenation is ``demo_block``."""
    f = data.format
    segs: list[tuple[str, int]] = [(f.instruction, FORMAT)] if f.instruction else []
    for d in demos:
        segs.append((f.input_prefix, FORMAT))
        segs.append((d.text, INPUT))
        if d.text_b is not None:
            segs += [(f.pair_separator, FORMAT), (d.text_b, INPUT), (f.pair_suffix, FORMAT)]
        segs += [(f.output_prefix, FORMAT), (data.continuation(d.label), LABEL), (f.example_separator, FORMAT)]
    return [s for s in segs if s[0]]


def _summary(runs: list[list[float]]) -> tuple[float, float, float]:
    flat = [a for r in runs for a in r]
    return float(np.mean(flat)), float(np.std(flat)), float(np.mean([max(r) - min(r) for r in runs]))


def icl_fewshot_budget(params: ICLFewShotParams, data: FewShotTextData, budget: Budget) -> Budgeted:
    """The first N of the task's evaluated examples (its fixed ``n_test`` subsample, in test-split
    order); the demonstration pool, shot counts, draws and orders are the task's. Under ``--smoke``
    CPT and prompt tuning take at most :data:`~cl_bench.budget.SMOKE_TRAIN_STEPS` steps each."""
    evaluated = fixed_subsample_indices(len(data.test.examples), params.n_test)
    keep = evaluated[: budget.eval_items]
    update: dict[str, Any] = {"n_test": None}
    applied = {"test": f"first {len(keep)} of the {len(evaluated)} evaluated examples"}
    steps = None
    if budget.train_steps is not None and set(params.adapt) != {"icl"}:
        steps = budget.train_steps
        update["cpt"] = params.cpt.model_copy(update={"steps": min(params.cpt.steps, steps)})
        update["prompt_tuning"] = params.prompt_tuning.model_copy(
            update={"steps": min(params.prompt_tuning.steps, steps)})
        applied["adaptation"] = (f"CPT {min(params.cpt.steps, steps)} of {params.cpt.steps} steps, prompt tuning "
                                 f"{min(params.prompt_tuning.steps, steps)} of {params.prompt_tuning.steps} steps")
    return Budgeted(params.model_copy(update=update), replace_test(data, keep), applied, steps)


def run_icl_fewshot(model: Any, data: FewShotTextData, params: ICLFewShotParams, ctx: RunContext) -> ProtocolResult:
    if not hasattr(model, "loglikelihood_tokens"):
        raise ClBenchError(f"{type(model).__name__} is not a causal LM (it has no loglikelihood)")
    if not isinstance(data, FewShotTextData):
        raise ClBenchError(f"protocol icl_fewshot needs few-shot text data, got {type(data).__name__}")
    from cl_bench.methods.lm import cpt as cpt_mod

    test_index = fixed_subsample_indices(len(data.test.examples), params.n_test)
    evaluated = [data.test.examples[i] for i in test_index]
    y = np.array([e.label for e in evaluated])
    pool = fp.demo_pool(data, evaluated)
    has_pair = any(e.text_b is not None for e in evaluated)
    cf_queries = [fp.content_free(s, has_pair) for s in params.content_free]
    C = data.num_classes
    metrics: dict[str, float] = {}
    curve: list[dict[str, Any]] = []
    dropped: dict[str, str] = {}
    cards: dict[str, list[Any]] = {"cpt": [], "prompt-tuning": [], "finetune": []}
    vs_gd = IclVsGd(model, data, evaluated, params) if "finetune" in params.adapt else None
    stats = {"ll_tokens": 0, "ll_seconds": 0.0, "requests": 0}
    example_prompt = None
    rows: dict[str, list[Any]] = {"item": [], "pred": [], "correct": [], "target": []}
    for k in sorted(params.ks):
        runs, runs_cal, runs_cpt, runs_pt = [], [], [], []
        runs_ft: list[list[float]] = []
        adapt_here = k > 0 and k in params.adapt_ks
        too_long = 0
        for d in range(params.draws if k > 0 else 1):
            drawn = fp.draw_demos(pool, k, ctx.seed, d)
            accs, accs_cal, accs_cpt, accs_ft = [], [], [], []
            for o, order in enumerate(orderings(drawn, ctx.seed, d, params.orders)):
                demos = [data.train.examples[i] for i in order]
                block = fp.demo_block(data, demos)
                pairs = pairs_for(model, data, block, evaluated)
                too_long = max(len(a) + len(b) for a, b in pairs) - 1
                if too_long > model.max_length:
                    break
                if example_prompt is None or (k <= params.primary_k and d == 0 and o == 0):
                    example_prompt = block + data.query_text(evaluated[0]) + data.continuation(evaluated[0].label)
                t0 = time.perf_counter()
                ll = score_matrix(model, pairs, C)
                stats["ll_seconds"] += time.perf_counter() - t0
                stats["ll_tokens"] += sum(len(a) + len(b) for a, b in pairs)
                stats["requests"] += len(pairs)
                accs.append(100.0 * float(np.mean(ll.argmax(axis=1) == y)))
                if k == params.primary_k:
                    # the units ``accuracy`` averages: query q (test-split index) under demonstration
                    # draw d, order o; the draws and orders follow the run seed, so it is in the id
                    rows["item"] += [f"seed{ctx.seed}/k{k}/d{d}/o{o}/q{i}" for i in test_index]
                    rows["pred"].append(ll.argmax(axis=1))
                    rows["correct"].append(ll.argmax(axis=1) == y)
                    rows["target"].append(y)
                if params.calibrate:
                    p_cf = fp.calibration_prior(score_matrix(model, pairs_for(model, data, block, cf_queries), C))
                    accs_cal.append(100.0 * float(np.mean(fp.calibrated_predictions(ll, p_cf) == y)))
                if adapt_here and "cpt" in params.adapt:
                    ids, types, labels = cpt_mod.segment_tokens(model, context_segments(data, demos))
                    delta, card = cpt_mod.refine_context(model, ids, types, labels, params.cpt)
                    lens = [_common_len(a, ids) for a, _ in pairs]
                    s = np.array(cpt_mod.score_pairs(model, pairs, delta=delta, delta_lens=lens)).reshape(-1, C)
                    accs_cpt.append(100.0 * float(np.mean(s.argmax(axis=1) == y)))
                    cards["cpt"].append({"k": k, "draw": d, "order": o, "first_loss": card["losses"][:1],
                                         "last_loss": card["losses"][-1:], "label_tokens": card["label_tokens"],
                                         "labels_unaligned": card["labels_unaligned"]})
                if adapt_here and vs_gd is not None:
                    accs_ft.append(vs_gd.run(k, d, o, demos, ll, y, cards["finetune"]))
            if too_long > model.max_length:
                dropped[str(k)] = f"prompts of up to {too_long} tokens exceed the model's context of {model.max_length}"
                break
            runs.append(accs)
            runs_cal.append(accs_cal)
            runs_cpt.append(accs_cpt)
            runs_ft.append(accs_ft)
            if adapt_here and "prompt-tuning" in params.adapt:
                runs_pt.append(_prompt_tuning_acc(model, data, [data.train.examples[i] for i in drawn],
                                                  evaluated, y, params.prompt_tuning, ctx.seed * 1000 + d, cards))
        if str(k) in dropped:
            continue
        point: dict[str, Any] = {"k": k, "runs": runs}
        metrics[f"acc_k{k}"], metrics[f"std_k{k}"], metrics[f"spread_k{k}"] = _summary(runs)
        point.update(acc=metrics[f"acc_k{k}"], std=metrics[f"std_k{k}"], spread=metrics[f"spread_k{k}"])
        if params.calibrate:
            metrics[f"acc_cal_k{k}"], _, metrics[f"spread_cal_k{k}"] = _summary(runs_cal)
            point.update(acc_cal=metrics[f"acc_cal_k{k}"], spread_cal=metrics[f"spread_cal_k{k}"], runs_cal=runs_cal)
        if runs_cpt and runs_cpt[0]:
            metrics[f"cpt_acc_k{k}"], metrics[f"cpt_std_k{k}"], metrics[f"cpt_spread_k{k}"] = _summary(runs_cpt)
            point.update(cpt_acc=metrics[f"cpt_acc_k{k}"], cpt_runs=runs_cpt)
        if vs_gd is not None and runs_ft and runs_ft[0]:
            ft = vs_gd.summary(k, runs, runs_ft)
            metrics.update(ft)
            point.update(ft_acc=ft[f"ft_acc_k{k}"], ft_runs=runs_ft)
        if runs_pt:
            metrics[f"pt_acc_k{k}"], metrics[f"pt_std_k{k}"] = float(np.mean(runs_pt)), float(np.std(runs_pt))
            point.update(pt_acc=metrics[f"pt_acc_k{k}"], pt_runs=runs_pt)
        curve.append(point)
    if f"acc_k{params.primary_k}" not in metrics:
        raise ClBenchError(f"icl_fewshot: primary_k {params.primary_k} could not be scored: {dropped.get(str(params.primary_k))}")
    metrics["accuracy"] = metrics[f"acc_k{params.primary_k}"]
    chance = 100.0 * float(np.max(np.bincount(y, minlength=C))) / len(y)
    # ICL at primary_k only: 100 * mean(correct) is ``accuracy`` (every draw x order scores every
    # query, so the pooled mean is the mean over draws x orders); calibrated / CPT / prompt-tuning
    # accuracies are not stored per item
    preds = Predictions(item=np.array(rows["item"]), pred=np.concatenate(rows["pred"]),
                        correct=np.concatenate(rows["correct"]), target=np.concatenate(rows["target"]))
    return ProtocolResult(predictions=preds, metrics=metrics, extras={
        "curve": curve, "curves": plot_curves(curve), "dropped_ks": dropped, "label_words": data.label_words,
        "chance": chance,
        "predictions_of": f"plain ICL at k={params.primary_k} (the 'accuracy' metric), not calibrated / CPT / prompt tuning",
        "format": data.format.model_dump(), "n_test": len(evaluated), "n_pool": len(pool),
        "example_prompt": (example_prompt or "")[-2000:],
        "content_free": params.content_free if params.calibrate else None,
        "adapt_cards": {k: v for k, v in cards.items() if v},
        "loglikelihood": {**stats, "tokens_per_s": stats["ll_tokens"] / max(stats["ll_seconds"], 1e-9)},
        "model_max_length": int(model.max_length), "dataset_meta": data.meta,
    })


def plot_curves(curve: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The leaderboard's ``extras["curves"]``: accuracy (and its variants) against k."""
    out: dict[str, dict[str, Any]] = {}
    for key, name in (("acc", "ICL accuracy vs k"), ("acc_cal", "calibrated ICL accuracy vs k"),
                      ("spread", "order spread vs k"), ("cpt_acc", "CPT accuracy vs k"),
                      ("pt_acc", "prompt-tuning accuracy vs k"), ("ft_acc", "fine-tuning (GD) accuracy vs k")):
        pts = [(p["k"], p[key]) for p in curve if key in p]
        if pts:
            out[name] = {"x": [k for k, _ in pts], "y": [v for _, v in pts], "x_label": "demonstrations k",
                         "y_label": "max - min accuracy over orders (points)" if key == "spread" else "accuracy (%)"}
    return out


def _common_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, z in zip(a, b):
        if x != z:
            break
        n += 1
    return n


class IclVsGd:
    """ICL vs few-shot fine-tuning on the same draws and orders (``adapt: finetune``)."""

    def __init__(self, model: Any, data: FewShotTextData, evaluated: list[FewShotExample], params: ICLFewShotParams) -> None:
        from cl_bench.methods.lm.cpt import score_pairs

        self.model, self.data, self.params = model, data, params
        self.test_pairs = pairs_for(model, data, data.format.instruction, evaluated)
        # the untouched model's zero-shot label scores: what both adaptations change
        self.zero = np.array(score_pairs(model, self.test_pairs)).reshape(-1, data.num_classes)
        self.compared: dict[int, list[dict[str, float]]] = {}

    def run(self, k: int, draw: int, order: int, demos: list[FewShotExample], icl: np.ndarray, y: np.ndarray,
            cards: list[Any]) -> float:
        from cl_bench.methods.lm import fewshot_finetune as ft

        instr = self.data.format.instruction
        train = [self.model.encode_pair(instr + self.data.query_text(d), self.data.continuation(d.label)) for d in demos]
        scores, card = ft.finetune_and_score(self.model, train, self.test_pairs, self.params.finetune)
        gd = scores.reshape(-1, self.data.num_classes)
        self.compared.setdefault(k, []).append(ft.compare_outputs(icl, gd, self.zero))
        cards.append({"k": k, "draw": draw, "order": order, **card})
        return 100.0 * float(np.mean(gd.argmax(axis=1) == y))

    def summary(self, k: int, runs: list[list[float]], runs_ft: list[list[float]]) -> dict[str, float]:
        from cl_bench.methods.lm.fewshot_finetune import order_correlation

        out: dict[str, float] = {}
        out[f"ft_acc_k{k}"], out[f"ft_std_k{k}"], out[f"ft_spread_k{k}"] = _summary(runs_ft)
        for key in ("agree", "kl", "update_cos"):
            out[f"icl_ft_{key}_k{k}"] = float(np.mean([c[key] for c in self.compared[k]]))
        corr = order_correlation(runs, runs_ft)
        if corr is not None:
            out[f"icl_ft_order_corr_k{k}"] = corr
        return out


def _prompt_tuning_acc(
    model: Any, data: FewShotTextData, demos: list[FewShotExample], evaluated: list[FewShotExample],
    y: np.ndarray, p: PromptTuningParams, seed: int, cards: dict[str, list[Any]],
) -> float:
    from cl_bench.methods.lm import cpt as cpt_mod

    instr = data.format.instruction
    train_pairs = [model.encode_pair(instr + data.query_text(d), data.continuation(d.label)) for d in demos]
    soft, card = cpt_mod.train_soft_prompt(model, train_pairs, p, seed)
    test_pairs = pairs_for(model, data, instr, evaluated)
    s = np.array(cpt_mod.score_pairs(model, test_pairs, soft=soft)).reshape(-1, data.num_classes)
    cards["prompt-tuning"].append({"k": len(demos), "first_loss": card["losses"][:1], "last_loss": card["losses"][-1:]})
    return 100.0 * float(np.mean(s.argmax(axis=1) == y))


register("protocol", "icl_fewshot")(
    Protocol(name="icl_fewshot", requires="causal_lm", params=ICLFewShotParams, run=run_icl_fewshot,
             data_kind="fewshot_text", budget=icl_fewshot_budget)
)
