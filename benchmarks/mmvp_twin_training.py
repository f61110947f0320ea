"""Can scene-clip learn an MMVP pattern once the contrastive objective sees its twins? (issue #18 part 1)

clip's arch (baselines/clip.yaml: scene-clip with the frozen-MiniLM text tower and a PoolConvNet
with global max pooling; ``--variants`` swaps the pooling or the text tower) is trained from
scratch with CLIP's symmetric InfoNCE on batches made ONLY of counterfactual twins of one pattern:
16 pairs (32 images) a step, drawn from the 1,500 training twins that ``scenes-captions``' ``twins``
makes for that pattern (scenes-mmvp's generator at pair indices from ``TWIN_FIRST`` on), each render
captioned with the statement true for it; AdamW 2e-3, constant. Every ``--every`` steps it scores
the task's own pairs of that pattern by MMVP-VLM's rule (the protocol's ``mmvp_scores``) and the
mean cosine of each pair's two statements in the text tower. This isolates whether a pattern is
learnable by the towers from twins at all, before they are mixed into the captions (the recipe
in baselines/_base/scene-clip.yaml). Appends one section to RESULTS.md.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/mmvp_twin_training.py \
        --patterns Orientation,Presence,Quantity,Spatial --variants minilm/max,minilm/attention [--steps 600]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.record import append_section, machine_line
from cl_bench.components import get
from cl_bench.data.image_text.mmvp import MMVPData, pattern_of
from cl_bench.data.scenes.captioned import TWIN_FIRST, CaptionedScenesParams, build_captioned_scenes
from cl_bench.data.scenes.mmvp_twin import COVERED_TYPES
from cl_bench.errors import ClBenchError
from cl_bench.methods.image_text.trainer import clamp_logit_scales
from cl_bench.protocols.mmvp_vlm import MMVPParams, mmvp_scores, model_logit_scale
from cl_bench.registry import Registry

PAIRS_PER_STEP = 16
TRAIN_PAIRS = 1500


def training_twins(kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """The recipe's training twins of ``kind`` (scenes-captions ``twins``, from its cache): renders A, B
    and their statements."""
    train = build_captioned_scenes(CaptionedScenesParams(n_train=0, n_test=1, seed=seed,
                                                         twins={kind: TRAIN_PAIRS})).train
    images = train.images.tensor()
    texts = [c[0] for c in train.captions]
    return images[0::2], images[1::2], texts[0::2], texts[1::2]


def run(kind: str, variant: str, steps: int, every: int, data: MMVPData, prefix: str, reg: Registry) -> list[str]:
    tower, pool = variant.split("/")
    method = reg.method("clip")
    params = {**method.arch.params, "text_tower": tower, "image_pool": pool}
    torch.manual_seed(0)
    model = get("arch", method.arch.name)(params, **data.arch_inputs)
    opt = torch.optim.AdamW(model.parameters(), lr=method.train.lr, weight_decay=method.train.weight_decay)
    a_img, b_img, a_txt, b_txt = training_twins(kind, data.meta["seed"])
    pairs = [k for k, t in enumerate(data.types) if t == kind]
    rows = np.asarray([2 * k + j for k in pairs for j in (0, 1)])
    test_images = data.images.tensor(rows)
    prompts = [prefix + data.statements[i] for i in rows]
    gen = np.random.default_rng(0)
    out = []
    t0 = time.process_time()
    for step in range(1, steps + 1):
        pick = gen.choice(TRAIN_PAIRS, PAIRS_PER_STEP, replace=False)
        images = torch.cat([a_img[pick], b_img[pick]])
        texts = [a_txt[i] for i in pick] + [b_txt[i] for i in pick]
        img = F.normalize(model.image_features(images)[0], dim=-1)
        txt = F.normalize(model.text_features(texts)[0], dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        target = torch.arange(len(texts))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        clamp_logit_scales(model)
        if step % every == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                v = model.embed_images(test_images).numpy()
                t = model.embed_texts(prompts).numpy()
            model.train()
            won = mmvp_scores(t, v, data.qids[rows], [pattern_of(kind)] * len(pairs),
                              model_logit_scale(model))["average"]
            cos = float(np.mean(np.sum(t[0::2] * t[1::2], axis=1)))
            out.append(f"| {kind} | {tower} / {pool} | {step} | {won:.0f} | {cos:.4f} | "
                       f"{time.process_time() - t0:.0f} |")
            print(out[-1], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patterns", default="Orientation,Presence,Quantity,Spatial")
    ap.add_argument("--variants", default="minilm/max", help="text_tower/image_pool pairs, comma-separated")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--task", default="scenes-mmvp")
    a = ap.parse_args()
    kinds = a.patterns.split(",")
    bad = [k for k in kinds if k not in COVERED_TYPES]
    if bad:
        ap.error(f"unknown pattern(s) {bad}; choose from {list(COVERED_TYPES)}")
    variants = a.variants.split(",")
    if any(v.count("/") != 1 or v.split("/")[0] not in ("minilm", "words")
           or v.split("/")[1] not in ("max", "mean", "attention") for v in variants):
        ap.error(f"variants are text_tower/image_pool with minilm|words and max|mean|attention, got {a.variants!r}")
    if a.steps < 1 or a.every < 1:
        ap.error("--steps and --every must be >= 1")
    torch.set_num_threads(1)
    reg = Registry()
    try:
        task = reg.task(a.task)
        data = get("dataset", task.dataset.name)(task.dataset.params, None)
    except ClBenchError as e:
        ap.error(str(e))
    if not isinstance(data, MMVPData) or "seed" not in data.meta:
        ap.error(f"task '{a.task}' is not a scenes MMVP twin; use scenes-mmvp")
    prefix = MMVPParams(**task.protocol.params).prefix
    rows = [r for kind in kinds for v in variants for r in run(kind, v, a.steps, a.every, data, prefix, reg)]
    append_section(
        f"## mmvp_twin_training (issue #18 part 1: can the towers learn a pattern from its twins; "
        f"{time.strftime('%Y-%m-%d')})",
        f"{machine_line()} 1 thread. Batches of {PAIRS_PER_STEP} twin pairs of one pattern only "
        f"({TRAIN_PAIRS} training pairs, pair indices from {TWIN_FIRST}), clip's arch and lr, constant; "
        f"scored on the {a.task} pairs of that pattern (chance 25 %).\n\n"
        "| pattern | text tower / image pool | step | pairs won % | cos(s_a, s_b) | CPU s |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows),
    )


if __name__ == "__main__":
    main()
