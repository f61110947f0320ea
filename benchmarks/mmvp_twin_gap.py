"""Why do the image–text methods fail the scenes-mmvp patterns? (issue #18 part 1, a diagnosis)

Two measurements, appended as one section to RESULTS.md:

1. **Where a trained model loses each pattern.** For every pair of the task (images A, B; the
   statement s_a true for A, s_b for B; unit embeddings), MMVP-VLM counts the pair iff
   (A - B)·s_a > 0 and (A - B)·s_b < 0. Write d = A - B: the pair is won iff the projection of d on
   the statements' *difference* (s_a - s_b) / 2 beats the magnitude of its projection on their
   *mean* (s_a + s_b) / 2 — the part both statements share ("a red triangle"), which moves both
   picks the same way. The table gives, per pattern, the pair accuracy, mean cos(s_a, s_b) of the
   model's text tower and of the raw frozen MiniLM sentence vectors, mean cos(A, B), and the mean
   of d·(s_a - s_b)/2 against the mean |d·(s_a + s_b)/2|.
2. **What the image tower can learn with labels.** scene-clip's image tower (PoolConvNet width 24,
   blocks [1, 2], global max or mean pooling), trained supervised from random init on renders of
   the task's own pair generator (other seeds than the task's) to predict a triangle's direction
   (4-way) or the number of objects of a Quantity twin (1-4), for the CLIP recipe's 868 steps of
   batch 32 (AdamW 2e-3), scored on 400 renders of the task's own seed. If it can, a failure of a
   contrastive model on that pattern is the objective's (no signal asks for it), not the tower's.

The trained models come from the cache (trained first if missing, as ``clbench run`` would):

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/mmvp_twin_gap.py --methods clip,negclip [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.record import append_section, machine_line
from benchmarks.scene_towers import NORM, Classifier
from cl_bench.cache import Cache, default_cache_dir
from cl_bench.components import get
from cl_bench.data.image_text.mmvp import MMVPData, own_image
from cl_bench.data.scenes.captions import DIRECTIONS, NUMBER_WORDS
from cl_bench.data.scenes.mmvp_twin import make_pair
from cl_bench.data.scenes.world import render
from cl_bench.errors import ClBenchError
from cl_bench.models.image.pool_convnet import PoolConvNet
from cl_bench.models.image_text.frozen_sentence_tower import minilm_cache
from cl_bench.obtain import obtain_model
from cl_bench.protocols.mmvp_vlm import MMVPParams, mmvp_scores, model_logit_scale
from cl_bench.registry import Registry


def pair_rows(task_id: str, method_id: str, seed: int, reg: Registry) -> list[str]:
    task = reg.task(task_id)
    data = get("dataset", task.dataset.name)(task.dataset.params, None)
    if not isinstance(data, MMVPData):
        raise ClBenchError(f"task '{task_id}' has no MMVP pairs; use scenes-mmvp")
    got = obtain_model(reg.method(method_id), data, seed=seed, device=torch.device("cpu"),
                       cache=Cache(default_cache_dir()), registry=reg)
    prompts = [MMVPParams(**task.protocol.params).prefix + s for s in data.statements]
    with torch.no_grad():
        images = got.model.embed_images(data.images.tensor()).numpy()
        texts = got.model.embed_texts(prompts).numpy()
    raw = minilm_cache()(prompts)
    won = mmvp_scores(texts, images, data.qids, data.patterns, model_logit_scale(got.model))["pair_correct"]
    by: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for k, pattern in enumerate(data.patterns):
        first = 2 * k
        ia, ib = (first + own_image(int(data.qids[first + j])) for j in (0, 1))
        d = images[ia] - images[ib]
        sa, sb = texts[first], texts[first + 1]
        apart, shared = float(d @ (sa - sb) / 2), abs(float(d @ (sa + sb) / 2))
        by[pattern].append((float(won[k]), float(sa @ sb), float(raw[first] @ raw[first + 1]),
                            float(images[ia] @ images[ib]), apart, shared))
    rows = []
    for pattern, values in by.items():
        v = np.asarray(values).mean(axis=0)
        rows.append(f"| {method_id} seed {seed} | {pattern} | {100 * v[0]:.0f} | {v[1]:.4f} | {v[2]:.4f} "
                    f"| {v[3]:.3f} | {v[4]:+.4f} | {v[5]:.4f} |")
    return rows


def labelled_renders(kind: str, seed: int, pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Both renders of ``pairs`` twins of pattern ``kind`` (float [2·pairs, 3, 64, 64]) and their labels: a
    triangle's direction (Orientation, 4-way) or the number of objects (Quantity, 1..4 -> 0..3)."""
    images, labels = [], []
    for k in range(pairs):
        a, b, sa, sb = make_pair(kind, seed, k, 64)
        for scene, statement in ((a, sa), (b, sb)):
            images.append(render(scene)[0])
            words = statement.split()
            labels.append(list(DIRECTIONS).index(words[-1]) if kind == "Orientation"
                          else NUMBER_WORDS.index(words[0]) - 1)
    # NHWC memory kept under the NCHW view (as the committed numbers were made: a contiguous copy picks other
    # conv kernels, and the Quantity rows move by up to 14 points with them)
    return torch.as_tensor(np.stack(images)).permute(0, 3, 1, 2).float() / 255, torch.tensor(labels)


def supervised_row(kind: str, pool: str, steps: int, data: tuple[torch.Tensor, ...]) -> str:
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(0)
    net = Classifier(PoolConvNet(3, 24, (1, 2), **NORM), pool, classes=int(y_train.max()) + 1)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    t0 = time.process_time()
    for _ in range(steps):
        idx = torch.randint(0, len(x_train), (32,), generator=gen)
        loss = F.cross_entropy(net(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x_test).argmax(1) == y_test).float().mean().item() * 100
    majority = torch.bincount(y_test).max().item() / len(y_test) * 100
    return f"| {kind} | {pool} | {steps} | {acc:.1f} | {majority:.1f} | {time.process_time() - t0:.0f} |"


def _steps(text: str) -> list[int]:
    try:
        steps = [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated step counts, got {text!r}") from None
    if any(n < 1 for n in steps):
        raise argparse.ArgumentTypeError(f"step counts must be >= 1, got {text!r}")
    return steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="clip")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", default="scenes-mmvp")
    ap.add_argument("--steps", type=_steps, default=[40, 868],
                    help="supervised steps of batch 32 (comma-separated)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    reg = Registry()
    try:
        rows = [r for m in a.methods.split(",") for r in pair_rows(a.task, m, a.seed, reg)]
    except ClBenchError as e:
        ap.error(str(e))
    sup = []
    for kind, pools in (("Orientation", ("max",)), ("Quantity", ("max", "mean"))):
        # train on other seeds' twins, test on the task's own world seed
        data = (*labelled_renders(kind, 11, 3000), *labelled_renders(kind, 0, 200))
        sup += [supervised_row(kind, pool, n, data) for pool in pools for n in a.steps]
    print("\n".join(rows + sup))
    append_section(
        f"## mmvp_twin_gap (issue #18 part 1: where the image–text methods lose {a.task}; "
        f"{time.strftime('%Y-%m-%d')})",
        f"{machine_line()} 1 thread. Trained models from the cache (`clbench run` recipe, seed {a.seed}).\n\n"
        "| model | pattern | pairs won % | cos(s_a, s_b) tower | cos(s_a, s_b) raw MiniLM | cos(A, B) "
        "| d·(s_a−s_b)/2 | \\|d·(s_a+s_b)/2\\| |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
        + "\n\nSupervised image tower (PoolConvNet width 24, blocks [1, 2]; 6,000 training renders of other "
        "seeds, 400 test renders of the task's seed):\n\n"
        "| target | pool | steps of 32 | test acc % | majority % | CPU s |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(sup),
    )


if __name__ == "__main__":
    main()
