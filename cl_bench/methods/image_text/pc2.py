"""PC² (Duan et al., ACM MM 2024, arXiv 2408.01349: "Pseudo-Classification Based Pseudo-Captioning
for Noisy Correspondence Learning in Cross-Modal Retrieval"), objective ``pc2``.

Written from the authors' ``pc2/model.py`` and ``pc2/co_train.py`` (alipay/PC2-NoiseofWeb), on a
two-tower image–text model (``scene-clip``) instead of their SGRAF cross-attention network:

- **ranking loss** (VSE++/SGRAF's ``ContrastiveLoss``) on the batch's cosine scores ``S`` (rows
  images, columns captions): ``cost_s = clamp(m + S - diag(S)[:, None], 1e-8)``,
  ``cost_im = clamp(m + S - diag(S)[None, :], 1e-8)``, diagonals zeroed; ``m`` is
  ``margin`` (0.2) or, per sample, ``margin * s(label)`` with the exponential soft margin
  ``s(l) = (10^l - 1) / 9`` — added along the caption axis as the code's broadcasting does.
  Per-sample loss (for the split) = row mean of ``cost_s`` + column mean of ``cost_im``; training
  sums the hardest negatives (row max + column max) over the batch (``hard_negative``, the code's
  ``lb_train``/``ulb_train`` with ``hard_negative=True``) or, with ``hard_negative: false``, the
  per-sample losses (the same ContrastiveLoss's ``hard_negative=False`` branch).
- **pseudo-classification**: a head shared by both towers (Linear -> ReLU -> Linear, 256 hidden,
  ``proj_dim`` pseudo-classes) on the global embeddings; each caption's arg-max pseudo-class is
  the target of its image's cross-entropy, minus ``lambda_en`` × the mean entropy of the image
  predictions (``loss = ranking + ce_img - lambda_en * H(p_img)``, as the code).
- **warm-up** (``warmup_epochs``): the sum of every pair's per-sample ranking loss (the code's
  default ``--warmup_type warmup``) or, with ``warmup_type: warmup_sele``, only the 50 % of pairs
  of each batch with the smallest one; plus pseudo-classification.
- **clean / noisy split**, before every later epoch: the per-sample ranking loss of every
  training pair (fixed chunks of ``batch_size``, margin 0.2), min-max normalised, a 2-component
  Gaussian mixture (sklearn, NCR's settings) -> ``p_clean`` = posterior of the low-loss
  component; clean iff ``p_clean > p_threshold`` (0.5).
- **training after the split**, per batch: clean pairs: hardest-negative ranking loss with the
  soft margin of ``p_clean``, plus pseudo-classification; noisy pairs (from epoch
  ``caption_epoch`` on, the authors' ``warmup_epoch_2``: 25 of their 50, before it the noisy
  pairs are left out): **pseudo-captions** — each
  noisy image takes the caption (its text embedding) of the clean pair of the batch whose image
  pseudo-class distribution is most cosine-similar, with label = that cosine (0 below 0.5), then
  the hardest-negative ranking loss with that soft margin. One optimizer step on the sum (the
  code steps once for the clean and once for the noisy loader).

Not reproduced: co-training of two networks (each here splits its own data, so confirmation
bias is not guarded against), the correspondence-trustworthiness (CTT) oscillation estimate, and
SGRAF; nor the fresh Adam the code makes after the warm-up (one optimizer and schedule run
through). The split's precision/recall against the known noise (``split.clean``, never used for
training) goes into the training card.

Version 2: the warm-up defaults to the code's ``warmup`` (every pair; version 1 always used
``warmup_sele``) and ``hard_negative`` can be switched off.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cl_bench.components import register
from cl_bench.methods.image_text.objectives import encode_pairs
from cl_bench.methods.image_text.trainer import Batch, ImageTextObjective, ImageTextParams


def soft_margin(labels: torch.Tensor, margin: float) -> torch.Tensor:
    """The code's ``exponential`` soft margin: ``margin * (10^labels - 1) / 9``."""
    return margin * (torch.pow(10.0, labels) - 1.0) / 9.0


def ranking_costs(scores: torch.Tensor, margin: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """``cost_s`` (caption retrieval) and ``cost_im`` (image retrieval) of an image x caption score
    matrix, clamped at 1e-8 with the diagonals zeroed; a per-sample margin adds along columns."""
    diagonal = scores.diag().view(-1, 1)
    cost_s = (margin + scores - diagonal).clamp(min=1e-8)
    cost_im = (margin + scores - diagonal.t()).clamp(min=1e-8)
    eye = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    return cost_s.masked_fill(eye, 0.0), cost_im.masked_fill(eye, 0.0)


def per_sample_loss(scores: torch.Tensor, margin: torch.Tensor | float) -> torch.Tensor:
    cost_s, cost_im = ranking_costs(scores, margin)
    return cost_s.mean(1) + cost_im.mean(0)


def hardest_negative_loss(scores: torch.Tensor, margin: torch.Tensor | float) -> torch.Tensor:
    cost_s, cost_im = ranking_costs(scores, margin)
    return cost_s.max(1)[0].sum() + cost_im.max(0)[0].sum()


def ranking_loss(scores: torch.Tensor, margin: torch.Tensor | float, hard_negative: bool) -> torch.Tensor:
    """ContrastiveLoss in ``lb_train``/``ulb_train`` mode: the hardest negatives summed over the batch,
    or (``hard_negative=False``) every pair's mean violations summed over the batch."""
    if hard_negative:
        return hardest_negative_loss(scores, margin)
    return per_sample_loss(scores, margin).sum()


def pseudo_classification(img_logits: torch.Tensor, txt_logits: torch.Tensor, lambda_en: float) -> torch.Tensor:
    """``CE(img_logits, argmax softmax(txt_logits)) - lambda_en * mean_i H(softmax(img_logits_i))``."""
    target = txt_logits.detach().argmax(dim=-1)
    probs = F.softmax(img_logits, dim=-1).clamp(min=1e-8)
    entropy = -(probs * probs.log()).sum(dim=1).mean()
    return F.cross_entropy(img_logits, target) - lambda_en * entropy


def pseudo_captions(p_noisy: torch.Tensor, p_clean: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """For each noisy image's pseudo-class distribution, the clean pair with the most similar one
    (cosine) and the label = that cosine, 0 below ``threshold``."""
    cos = F.cosine_similarity(p_noisy[:, None, :], p_clean[None, :, :], dim=-1)
    best, idx = cos.max(dim=1)
    return idx, torch.where(best < threshold, torch.zeros_like(best), best)


def gmm_clean_probability(losses: np.ndarray, seed: int = 0) -> np.ndarray:
    """Min-max normalised losses -> 2-component GMM -> posterior of the lower-mean component."""
    from sklearn.mixture import GaussianMixture

    x = (losses - losses.min()) / max(float(losses.max() - losses.min()), 1e-12)
    gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=seed)
    gmm.fit(x.reshape(-1, 1))
    return gmm.predict_proba(x.reshape(-1, 1))[:, int(gmm.means_.argmin())]


class PC2Params(ImageTextParams):
    margin: float = Field(default=0.2, gt=0)
    lambda_en: float = Field(default=1.0, ge=0)
    proj_dim: int = Field(default=128, ge=2, le=100_000)
    hidden: int = Field(default=256, ge=2, le=100_000)
    warmup_epochs: int = Field(default=1, ge=0)
    warmup_rate: float = Field(default=0.5, gt=0, le=1)
    # the authors' --warmup_type: "warmup" (their default and their commands) = the sum of every
    # pair's mean violations; "warmup_sele" = only the lower-loss warmup_rate of each batch
    warmup_type: Literal["warmup", "warmup_sele"] = "warmup"
    # the authors' ContrastiveLoss(hard_negative=...) after the warm-up: True = the hardest negative
    # per pair (their train() passes True); False = the sum of every pair's mean violations
    hard_negative: bool = True
    p_threshold: float = Field(default=0.5, gt=0, lt=1)
    pseudo_threshold: float = Field(default=0.5, ge=0, le=1)
    caption_epoch: int = Field(default=0, ge=0)  # the authors' warmup_epoch_2: noisy pairs train (pseudo-captions) from this epoch on


@register("objective", "pc2", params=PC2Params)
class PC2(ImageTextObjective):
    version = 2  # 2: warmup_type (default the code's "warmup": every pair) and hard_negative

    def __init__(self, embed_dim: int = 0, num_classes: int = 0, **params: Any) -> None:
        super().__init__(embed_dim, num_classes, **params)
        self.head: nn.Module | None = None
        self.epoch = 0
        self.p_clean: torch.Tensor | None = None
        self.split_log: list[dict[str, float]] = []
        self._clean_truth: list[list[bool]] | None = None
        self.split_captions: list[list[str]] | None = None
        self.batch_size = 128

    def _head(self, dim: int, device: torch.device) -> nn.Module:
        if self.head is None:
            p = self.params
            self.head = nn.Sequential(nn.Linear(dim, p.hidden), nn.ReLU(), nn.Linear(p.hidden, p.proj_dim)).to(device)
        return self.head

    def prepare(self, model: nn.Module, split: Any) -> None:
        """Build the head before the optimizer is made (its width is the model's embedding size)."""
        self._head(int(model.embed_dim), next(model.parameters()).device)
        self._clean_truth = getattr(split, "clean", None)

    @torch.no_grad()
    def start_epoch(self, model: nn.Module, images: torch.Tensor, captions: list[str], epoch: int) -> None:
        self.epoch = epoch
        if epoch < self.params.warmup_epochs:
            self.p_clean = None
            return
        was_training = model.training
        model.eval()
        losses = []
        for start in range(0, len(captions), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            img = F.normalize(model.image_features(images[chunk])[0], dim=-1)
            txt = F.normalize(model.text_features(captions[chunk])[0], dim=-1)
            losses.append(per_sample_loss(img @ txt.T, self.params.margin).cpu())
        model.train(was_training)
        prob = gmm_clean_probability(torch.cat(losses).double().numpy(), seed=epoch)
        self.p_clean = torch.from_numpy(prob).float()
        self._log_split(prob > self.params.p_threshold, captions)

    def _log_split(self, pred: np.ndarray, captions: list[str]) -> None:
        entry = {"epoch": self.epoch, "clean_fraction": round(float(pred.mean()), 4)}
        truth = self.epoch_truth(captions)
        if truth is not None:
            tp = float((pred & truth).sum())
            entry["precision"] = round(tp / max(float(pred.sum()), 1.0), 4)
            entry["recall"] = round(tp / max(float(truth.sum()), 1.0), 4)
        self.split_log.append(entry)

    def epoch_truth(self, captions: list[str]) -> np.ndarray | None:
        """Whether each image's caption of this epoch is a correct one (diagnostics only)."""
        if self._clean_truth is None or self.split_captions is None:
            return None
        return np.array([ok[caps.index(c)] for ok, caps, c in zip(self._clean_truth, self.split_captions, captions)])

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        img, txt = encode_pairs(model, batch)
        head = self._head(img.shape[1], img.device)
        img_logits, txt_logits = head(img), head(txt)
        if self.p_clean is None:  # warm-up: every pair's mean violations (or the lower-loss share)
            sample = per_sample_loss(img @ txt.T, p.margin)
            if p.warmup_type == "warmup_sele":
                sample = sample.topk(k=max(1, int(len(sample) * p.warmup_rate)), largest=False).values
            rank = sample.sum()
            pc = pseudo_classification(img_logits, txt_logits, p.lambda_en)
            return rank + pc, {"ranking": rank.detach(), "pseudo_cls": pc.detach()}
        prob = self.p_clean[batch.indices.cpu()].to(img.device)
        clean = prob > p.p_threshold
        zero = img.sum() * 0.0
        lb = ulb = pc = zero
        if int(clean.sum()) >= 2:
            ci, ct = img[clean], txt[clean]
            lb = ranking_loss(ci @ ct.T, soft_margin(prob[clean], p.margin), p.hard_negative)
            pc = pseudo_classification(img_logits[clean], txt_logits[clean], p.lambda_en)
        noisy = ~clean
        if self.epoch >= p.caption_epoch and int(noisy.sum()) >= 2 and int(clean.sum()) >= 1:
            p_noisy = F.softmax(img_logits[noisy], dim=-1)
            p_lb = F.softmax(img_logits[clean], dim=-1)
            idx, labels = pseudo_captions(p_noisy.detach(), p_lb.detach(), p.pseudo_threshold)
            substitute = txt[clean][idx]
            ulb = ranking_loss(img[noisy] @ substitute.T, soft_margin(labels, p.margin), p.hard_negative)
        total = lb + pc + ulb
        return total, {"clean_ranking": lb.detach(), "pseudo_cls": pc.detach(), "pseudo_caption_ranking": ulb.detach()}

    def card_extra(self) -> dict[str, Any]:
        return {"split": self.split_log}

    @classmethod
    def train_model(cls, model: nn.Module, recipe: Any, split: Any, num_classes: int, seed: int,
                    device: torch.device, progress: bool = False) -> Any:
        from cl_bench.methods.image_text.trainer import train_image_text

        objective = cls(**recipe.params)
        objective.batch_size = min(recipe.batch_size, len(split))
        objective.split_captions = getattr(split, "captions", None)
        model.to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            objective.prepare(model, split)
        return train_image_text(model, objective, recipe, split, seed, device, progress)
