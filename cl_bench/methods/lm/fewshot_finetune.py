"""Few-shot fine-tuning of a causal LM on the k demonstrations, and how it compares with ICL on them.

"Do pretrained Transformers Learn In-Context by Gradient Descent?" (Shen, Mishra, Khashabi;
ICML 2024, arXiv 2310.08540) tests the ICL = GD hypothesis on real pretrained LMs rather than
models trained for ICL: the same model either reads k demonstrations in its context (ICL) or
takes gradient steps on them (GD, fine-tuning), and the two are compared on performance, on
sensitivity to the order of the demonstrations, and on how they change the output distribution.

Here, for one draw of k demonstrations in one order (the few-shot suite's draws and orders):

- **GD**: every weight of a copy of the model is fine-tuned with plain SGD, one demonstration
  per step in the given order (so the order matters, as for ICL), ``epochs`` passes, on the
  cross-entropy of the label word after the zero-shot prompt (instruction + query: the format
  the model is scored with afterwards, without demonstrations); dropout off. The model's weights
  are restored afterwards.
- **comparison** on the evaluated queries, with ``p(c|x)`` the softmax over the label words'
  summed log-likelihoods, ``p_icl`` after the demonstrations, ``p_gd`` from the fine-tuned model
  (zero-shot prompt), ``p_0`` the untouched model's zero-shot distribution:
  agreement = % of queries where both predict the same label;
  KL = mean_x KL(p_icl || p_gd) (nats); update cosine = mean_x cos(log p_icl - log p_0,
  log p_gd - log p_0), the cosine of the two changes of the output log-distribution (each
  centred over the labels, so a constant shift of all labels is no change).

The optimizer steps are :func:`sgd_steps`, kept small and separate: #17's one training loop
(``methods/trainer.fit``) is not on main yet, and this is the hunk to move onto it when it lands.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field

from cl_bench.errors import ClBenchError
from cl_bench.methods.lm.cpt import _continuation_logprobs, hf_of, score_pairs
from cl_bench.models.interfaces.causal_lm import TokenPair
from cl_bench.specs import Strict


class FinetuneParams(Strict):
    epochs: int = Field(default=4, ge=1, le=1000)  # passes over the k demonstrations
    lr: float = Field(default=0.001, gt=0)  # plain SGD, no momentum


def finetune_and_score(
    model: Any, train_pairs: Sequence[TokenPair], test_pairs: Sequence[TokenPair], p: FinetuneParams,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fine-tune every weight on ``train_pairs`` (one per SGD step, in order, ``epochs`` passes),
    score ``test_pairs`` (summed continuation log-likelihoods), restore the weights."""
    hf = hf_of(model)
    if not train_pairs:
        raise ClBenchError("few-shot fine-tuning needs at least one demonstration (k >= 1)")
    saved = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    flags = [(q, q.requires_grad) for q in hf.parameters()]
    was_training = hf.training
    params = [q for q, _ in flags]
    for q in params:
        q.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=p.lr, momentum=0.0)
    hf.eval()  # dropout off: the update is the gradient of the deterministic model
    try:
        with torch.enable_grad():
            losses = sgd_steps(
                opt, [pair for _ in range(p.epochs) for pair in train_pairs],
                lambda pair: -_continuation_logprobs(hf, [pair], None, None, None, model.eot_token_id)[0].mean(),
            )
        scores = np.array(score_pairs(model, list(test_pairs)), dtype=np.float64)
    finally:
        hf.load_state_dict(saved)
        for q, flag in flags:
            q.requires_grad_(flag)
        hf.train(was_training)
    return scores, {"steps": len(losses), "first_loss": round(losses[0], 5), "last_loss": round(losses[-1], 5)}


def sgd_steps(opt: torch.optim.Optimizer, batches: Sequence[Any], loss: Callable[[Any], torch.Tensor]) -> list[float]:
    """One optimizer step per batch, in order; a non-finite loss is a one-line error. Returns the losses."""
    out: list[float] = []
    for step, batch in enumerate(batches):
        value = loss(batch)
        if not math.isfinite(float(value.detach())):
            raise ClBenchError(f"few-shot fine-tuning: the loss became {float(value.detach())} at step {step}; lower finetune.lr")
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        out.append(float(value.detach()))
    return out


def label_log_distribution(scores: np.ndarray) -> np.ndarray:
    """[N, C] label log-likelihoods -> [N, C] log-softmax over the labels."""
    s = scores - scores.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def compare_outputs(icl: np.ndarray, gd: np.ndarray, zero: np.ndarray) -> dict[str, float]:
    """Agreement (%), mean KL(p_icl || p_gd) and mean update cosine; inputs are [N, C] label log-likelihoods."""
    li, lg, l0 = label_log_distribution(icl), label_log_distribution(gd), label_log_distribution(zero)
    agree = 100.0 * float(np.mean(icl.argmax(axis=1) == gd.argmax(axis=1)))
    kl = float(np.mean(np.sum(np.exp(li) * (li - lg), axis=1)))
    di, dg = li - l0, lg - l0
    di -= di.mean(axis=1, keepdims=True)
    dg -= dg.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(di, axis=1) * np.linalg.norm(dg, axis=1)
    cos = np.where(norms > 0, np.sum(di * dg, axis=1) / np.where(norms > 0, norms, 1.0), 0.0)
    return {"agree": agree, "kl": kl, "update_cos": float(np.mean(cos))}


def order_correlation(icl: Sequence[Sequence[float]], gd: Sequence[Sequence[float]]) -> float | None:
    """Pearson correlation, over every (draw, order), of ICL's and GD's accuracy deviations from
    their draw's mean: does the order that helps ICL help GD? None without order variation."""
    a = np.concatenate([np.asarray(r, float) - np.mean(r) for r in icl])
    b = np.concatenate([np.asarray(r, float) - np.mean(r) for r in gd])
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else None
