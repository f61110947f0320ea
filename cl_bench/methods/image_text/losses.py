"""The losses of the image–text methods, as plain functions of embeddings (no modules, no state).

Conventions: ``img`` / ``txt`` are L2-normalised embeddings [N, D] of N matched pairs (row i of
one matches row i of the other); ``scale`` is the inverse temperature (CLIP's ``logit_scale.exp()``,
a tensor or a float). Every loss is a mean, so it does not grow with the batch.

- :func:`clip_loss` — CLIP's symmetric InfoNCE (Radford et al. 2021; open_clip ``ClipLoss``):
  ``(CE(s·I Tᵀ, diag) + CE(s·T Iᵀ, diag)) / 2``.
- :func:`dcl_clip_loss` — DCL's decoupled denominator (Yeh et al., arXiv 2110.06848) on the
  cross-modal logits: for each anchor, ``-s_ii + log Σ_{j≠i} exp(s_ij)``, both directions averaged.
- :func:`negclip_loss` — NegCLIP (Yuksekgonul et al., ICLR 2023, arXiv 2210.01936; the authors'
  open_clip fork vinid/neg_clip ``ClipLoss``): extra hard-negative texts join the candidates of
  the image→text softmax only, ``(CE(s·I [T; H]ᵀ, diag) + CE(s·T Iᵀ, diag)) / 2``. With no
  negatives it is exactly :func:`clip_loss`.
- :func:`multi_positive_clip_loss` — DreamLIP's multi-positive InfoNCE (arXiv 2403.17007): image i
  has K positive texts (its sub-captions); image→text is a softmax over all N·K texts, each of the
  K positives contributing its own log-probability (averaged); text→image is the usual CE over the
  N images. With K = 1 it is exactly :func:`clip_loss`.
- :func:`grouping_loss` — DreamLIP's sub-caption-specific grouping: each sub-caption weights its
  own image's local patches by min–max-normalised similarity (weights below ``threshold`` set to
  0, the rest renormalised); the weighted patch mean is contrasted with the sub-caption over all
  N·K (sub-caption, grouped patches) pairs, both directions.
- :func:`prototype_loss` / :func:`back_translate` — ProtoCLIP (arXiv 2206.10996): the student
  modality's features are classified against prototypes, with the teacher modality's cluster as
  the target (one-hot, or the softmax of the teacher prototypes' similarities at
  ``target_temperature``); prototypical back translation builds the student's prototypes as the
  mean of the student's own features over the teacher's clusters.
- :func:`info_nce` / :func:`global_local_loss` — TCL (arXiv 2202.10401): intra-modal InfoNCE between
  two views, and the local–global mutual-information term: each local feature (patch or token) of
  sample i must pick sample i's global embedding against every local feature of the other samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Scale = torch.Tensor | float


def _targets(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


def _check_pairs(img: torch.Tensor, txt: torch.Tensor) -> None:
    if img.ndim != 2 or img.shape != txt.shape:
        raise ValueError(f"img and txt must both be [N, D], got {tuple(img.shape)} and {tuple(txt.shape)}")


def clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: Scale) -> torch.Tensor:
    """Symmetric InfoNCE over the in-batch image–text similarities."""
    _check_pairs(img, txt)
    logits = scale * img @ txt.T
    t = _targets(len(img), img.device)
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t)) / 2


def negclip_loss(img: torch.Tensor, txt: torch.Tensor, negatives: torch.Tensor, scale: Scale) -> torch.Tensor:
    """NegCLIP: image i must pick caption i among the M true captions AND the K ``negatives``
    [K, D]; each true caption picks its image among the M images (the negatives are no anchors)."""
    _check_pairs(img, txt)
    if negatives.ndim != 2 or negatives.shape[1] != img.shape[1]:
        raise ValueError(f"negatives must be [K, {img.shape[1]}], got {tuple(negatives.shape)}")
    m = len(img)
    logits = scale * img @ torch.cat([txt, negatives]).T  # [M, M + K]
    t = _targets(m, img.device)
    return (F.cross_entropy(logits, t) + F.cross_entropy(logits[:, :m].T, t)) / 2


def dcl_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Decoupled contrastive loss of a square logit matrix (rows: anchors of one modality)."""
    n = logits.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    pos = logits.diagonal()
    neg_rows = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)
    neg_cols = torch.logsumexp(logits.T.masked_fill(eye, float("-inf")), dim=1)
    return ((neg_rows - pos).mean() + (neg_cols - pos).mean()) / 2


def dcl_clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: Scale) -> torch.Tensor:
    """CLIP's loss with the positive removed from every denominator (DCL), both directions."""
    _check_pairs(img, txt)
    if len(img) < 2:
        raise ValueError("dcl-clip needs at least 2 pairs in a batch (a negative for each anchor)")
    return dcl_from_logits(scale * img @ txt.T)


def multi_positive_clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: Scale) -> torch.Tensor:
    """Image i [N, D] against its K texts ``txt[i]`` [N, K, D] (see module doc)."""
    if img.ndim != 2 or txt.ndim != 3 or txt.shape[0] != img.shape[0] or txt.shape[2] != img.shape[1]:
        raise ValueError(f"need img [N, D] and txt [N, K, D], got {tuple(img.shape)} and {tuple(txt.shape)}")
    n, k, d = txt.shape
    flat = txt.reshape(n * k, d)  # row i*k + j: text j of image i
    logits = scale * img @ flat.T  # [N, N*K]
    logp = F.log_softmax(logits, dim=1).view(n, n, k)
    i2t = -logp[torch.arange(n), torch.arange(n)].mean()  # [N, K] positives, averaged
    owner = torch.arange(n, device=img.device).repeat_interleave(k)
    t2i = F.cross_entropy(logits.T, owner)
    return (i2t + t2i) / 2


def group_patches(sub: torch.Tensor, patches: torch.Tensor, threshold: float) -> torch.Tensor:
    """Grouped patch embedding [N, K, D] of each sub-caption ``sub`` [N, K, D] over its image's
    ``patches`` [N, M, D] (all L2-normalised); see the module doc."""
    sim = torch.einsum("nkd,nmd->nkm", sub, patches)
    lo = sim.min(dim=-1, keepdim=True).values
    hi = sim.max(dim=-1, keepdim=True).values
    w = (sim - lo) / (hi - lo + 1e-10)
    w = torch.where(w < threshold, torch.zeros_like(w), w)
    w = w / w.sum(dim=-1, keepdim=True).clamp_min(1e-10)
    return F.normalize(torch.einsum("nkm,nmd->nkd", w, patches), dim=-1)


def grouping_loss(sub: torch.Tensor, patches: torch.Tensor, scale: Scale, threshold: float = 0.1) -> torch.Tensor:
    """DreamLIP's grouping loss: symmetric InfoNCE between every sub-caption and its grouped
    patches, over the N·K pairs of the batch."""
    if sub.ndim != 3 or patches.ndim != 3 or sub.shape[0] != patches.shape[0] or sub.shape[2] != patches.shape[2]:
        raise ValueError(f"need sub [N, K, D] and patches [N, M, D], got {tuple(sub.shape)}, {tuple(patches.shape)}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    grouped = group_patches(sub, patches, threshold)
    d = sub.shape[2]
    return clip_loss(grouped.reshape(-1, d), sub.reshape(-1, d), scale)


def back_translate(teacher_labels: torch.Tensor, student: torch.Tensor, k: int) -> torch.Tensor:
    """Prototypical back translation: prototype c [k, D] = mean of ``student`` rows whose teacher
    cluster is c (zeros for a cluster with no member)."""
    labels = teacher_labels.long()
    out = torch.zeros(k, student.shape[1], dtype=student.dtype, device=student.device)
    out.index_add_(0, labels, student)
    counts = torch.bincount(labels, minlength=k).clamp_min(1).to(student.dtype)
    return out / counts[:, None]


def prototype_loss(
    student: torch.Tensor,
    student_prototypes: torch.Tensor,
    teacher_prototypes: torch.Tensor,
    teacher_labels: torch.Tensor,
    scale: Scale,
    target_temperature: float,
) -> torch.Tensor:
    """ProtoCLIP's prototype-level discrimination: CE of ``scale · student @ student_prototypesᵀ``
    [N, K] against the teacher's cluster of each sample — a one-hot target when
    ``target_temperature <= 0``, else ``softmax(teacher_proto[label] @ teacher_protoᵀ / T)``."""
    logits = scale * student @ student_prototypes.T
    if target_temperature > 0:
        target = teacher_prototypes[teacher_labels] @ teacher_prototypes.T / target_temperature
        return F.cross_entropy(logits, target.softmax(dim=1))
    return F.cross_entropy(logits, teacher_labels.long())


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, temperature: float) -> torch.Tensor:
    """One-direction InfoNCE: anchor i must pick positive i among all positives (rows normalised)."""
    _check_pairs(anchor, positive)
    return F.cross_entropy(anchor @ positive.T / temperature, _targets(len(anchor), anchor.device))


def global_local_loss(
    local: torch.Tensor, global_: torch.Tensor, temperature: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """TCL's local–global MI term. ``local`` [N, M, D] (normalised), ``global_`` [N, D]
    (normalised), ``mask`` [N, M] (1 = a real token; None = all real).

    For each real local feature (i, m): softmax over [<l_im, g_i>] ∪ {<l_jm', g_i> : j ≠ i, m'
    real}; the loss is -log of the positive's probability, averaged over i's real locals, then
    over i.
    """
    n, m, d = local.shape
    if global_.shape != (n, d):
        raise ValueError(f"global must be [{n}, {d}], got {tuple(global_.shape)}")
    valid = torch.ones(n, m, dtype=torch.bool, device=local.device) if mask is None else mask.bool()
    pos = torch.einsum("nmd,nd->nm", local, global_) / temperature  # [N, M]
    cross = global_ @ local.reshape(n * m, d).T / temperature  # [N (anchor g_i), N*M (l_jm')]
    owner = torch.arange(n, device=local.device).repeat_interleave(m)
    drop = (owner[None, :] == torch.arange(n, device=local.device)[:, None]) | ~valid.reshape(1, n * m)
    neg = torch.logsumexp(cross.masked_fill(drop, float("-inf")), dim=1)  # [N]
    loss = -(pos - torch.logaddexp(pos, neg[:, None]))  # [N, M]
    per_sample = (loss * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1)
    return per_sample.mean()
