"""Demonstration sampling, prompt building and contextual calibration for few-shot ICL.

Sampling (deterministic per run seed): the demonstration pool is the train split minus every
example whose text (and text pair) equals an evaluated test example's — so a demonstration is
never the evaluated example, even where a dataset repeats sentences across splits (SST-2 does).
For shot count ``k`` and draw ``d`` the ``k`` demonstrations are drawn uniformly without
replacement with ``numpy.random.default_rng([seed, k, d])``; order 0 is the drawn order, order
``o > 0`` a permutation from ``default_rng([seed, k, d, o])``. One demonstration set (and order)
serves every test example, as in Zhao et al. 2021, so calibration and order effects are
measured on the same context.

Contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): with the same
demonstrations, each content-free input (default "N/A", "", "[MASK]") replaces the test input;
p_cf = the mean over them of the label-word probabilities renormalised over the label words;
the calibrated prediction is argmax_c (log p(c | x) − log p_cf(c)) (W = diag(p_cf)⁻¹, b = 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cl_bench.data.icl.fewshot_text import FewShotExample, FewShotTextData
from cl_bench.errors import ClBenchError


def demo_pool(data: FewShotTextData, evaluated: Sequence[FewShotExample]) -> list[int]:
    """Indices of train examples that may serve as demonstrations (none equal to an evaluated one)."""
    banned = {e.key() for e in evaluated}
    return [i for i, e in enumerate(data.train.examples) if e.key() not in banned]


def draw_demos(pool: Sequence[int], k: int, seed: int, draw: int) -> list[int]:
    """``k`` distinct pool indices for draw ``draw`` of shot count ``k``."""
    if k > len(pool):
        raise ClBenchError(
            f"icl_fewshot: {k} demonstrations asked for but the train pool has only {len(pool)} usable "
            "examples; lower the shot counts (ks) or use a larger train split"
        )
    if k == 0:
        return []
    rng = np.random.default_rng([seed, k, draw])
    return [int(pool[i]) for i in rng.choice(len(pool), size=k, replace=False)]


def reorder(demos: Sequence[int], seed: int, draw: int, order: int) -> list[int]:
    """Order ``order`` of a demonstration set (order 0 = as drawn)."""
    if order == 0 or len(demos) < 2:
        return list(demos)
    perm = np.random.default_rng([seed, len(demos), draw, order]).permutation(len(demos))
    return [demos[i] for i in perm]


def demo_block(data: FewShotTextData, demos: Sequence[FewShotExample]) -> str:
    """The instruction and the demonstrations, each followed by the example separator."""
    sep = data.format.example_separator
    return data.format.instruction + "".join(data.demo_text(d) + sep for d in demos)


def prompt(data: FewShotTextData, demos: Sequence[FewShotExample], query: FewShotExample) -> str:
    return demo_block(data, demos) + data.query_text(query)


def content_free(query_text: str, has_pair: bool) -> FewShotExample:
    return FewShotExample(text=query_text, label=0, text_b=query_text if has_pair else None)


def calibration_prior(cf_logliks: np.ndarray) -> np.ndarray:
    """p_cf [C]: mean over content-free inputs of the label-word probabilities renormalised over
    the label words; ``cf_logliks`` is [n_content_free, C] summed log-likelihoods."""
    ll = np.asarray(cf_logliks, dtype=np.float64)
    ll = ll - ll.max(axis=1, keepdims=True)
    p = np.exp(ll)
    return (p / p.sum(axis=1, keepdims=True)).mean(axis=0)


def calibrated_predictions(logliks: np.ndarray, p_cf: np.ndarray) -> np.ndarray:
    """argmax_c (log p(c|x) − log p_cf(c)) for ``logliks`` [N, C]."""
    return np.argmax(np.asarray(logliks, dtype=np.float64) - np.log(np.maximum(p_cf, 1e-300))[None, :], axis=1)
