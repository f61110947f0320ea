"""``protoclip``: Prototypical Contrastive Language Image Pretraining (Chen et al., arXiv 2206.10996).

Loss = ``w_clip`` × CLIP's InfoNCE + ``w_proto`` × ½ (L_image→text + L_text→image), where
(as the authors' ``training/train.py`` and ``loss.py``, megvii-research/protoclip):

- each modality has a projection head (Linear–ReLU–Linear to ``proto_dim``, L2-normalised) on
  top of its CLIP embedding, and its own learnable prototype logit scale;
- at the start of an episode the episode's image and caption features are extracted (eval mode,
  no gradient) and clustered separately by k-means into ``clusters`` prototypes each;
- L_image→text classifies each image's projected feature against the image-side prototypes,
  with its caption's text cluster as the target — softened as softmax(text_proto[label] ·
  text_protoᵀ / ``target_temperature``) (one-hot if ``target_temperature`` <= 0); with
  prototypical back translation (``pbt``, the paper's default) the image-side prototypes are the
  mean IMAGE features of each text cluster, so grouping is transferred without requiring the
  two modalities' features to coincide (robust to the modality gap); without it they are the
  text prototypes themselves. L_text→image is the mirror image.
- the first ``infonce_warmup_epochs`` epochs train with CLIP's loss only (the paper warms up
  with InfoNCE).

Simplifications for CPU scale: an episode is the whole (small) training set and is re-clustered
every ``cluster_every`` epochs (the paper samples 0.2M-pair episodes from 2.5M pairs and
clusters each); k-means is scikit-learn's (the paper uses faiss); no external RoBERTa teacher
and no final LiT epoch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cl_bench.components import register
from cl_bench.methods.image_text.losses import back_translate, clip_loss, prototype_loss
from cl_bench.methods.image_text.objectives import Parts
from cl_bench.methods.image_text.trainer import Batch, ImageTextObjective, ImageTextParams


class ProtoClipParams(ImageTextParams):
    clusters: int = Field(default=32, ge=1, le=100_000)
    proto_dim: int = Field(default=64, ge=2, le=4096)
    target_temperature: float = Field(default=0.01)  # <= 0: one-hot targets
    pbt: bool = True  # prototypical back translation
    w_clip: float = Field(default=1.0, ge=0)
    w_proto: float = Field(default=1.0, ge=0)
    infonce_warmup_epochs: int = Field(default=1, ge=0)
    cluster_every: int = Field(default=1, ge=1)
    kmeans_restarts: int = Field(default=3, ge=1, le=50)
    kmeans_max_iter: int = Field(default=20, ge=1, le=1000)


def _head(dim: int, out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, out))


def kmeans(features: np.ndarray, k: int, restarts: int, max_iter: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids [N] and centroids [k, D] (k is capped at N)."""
    from sklearn.cluster import KMeans

    k = min(k, len(features))
    km = KMeans(n_clusters=k, n_init=restarts, max_iter=max_iter, random_state=seed % 2**31)
    labels = km.fit_predict(features.astype(np.float64))
    return labels.astype(np.int64), km.cluster_centers_.astype(np.float32)


@register("objective", "protoclip")
class ProtoClip(ImageTextObjective):
    objective_name = "protoclip"
    params_model = ProtoClipParams

    def __init__(self, embed_dim: int = 0, num_classes: int = 0, **params: Any) -> None:
        super().__init__(embed_dim, num_classes, **params)
        self.image_head: nn.Module | None = None
        self.text_head: nn.Module | None = None
        self.logit_scale_proto = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.prototypes: dict[str, torch.Tensor] = {}
        self.episodes = 0
        self.seed = 0

    def build_heads(self, dim: int, seed: int) -> None:
        """The projection heads (seeded; must exist before the optimizer is built)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.image_head = _head(dim, self.params.proto_dim)
            self.text_head = _head(dim, self.params.proto_dim)
        self.seed = seed

    def project(self, model: nn.Module, images: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, ...]:
        img = F.normalize(model.image_features(images)[0], dim=-1)
        txt = F.normalize(model.text_features(texts)[0], dim=-1)
        return img, txt, F.normalize(self.image_head(img), dim=-1), F.normalize(self.text_head(txt), dim=-1)

    def start_epoch(self, model: nn.Module, images: torch.Tensor, captions: list[str], epoch: int) -> None:
        p: ProtoClipParams = self.params
        if epoch < p.infonce_warmup_epochs or (epoch - p.infonce_warmup_epochs) % p.cluster_every:
            return
        was_model, was_self = model.training, self.training
        model.eval()
        self.eval()
        img_parts, txt_parts = [], []
        with torch.no_grad():
            for i in range(0, len(images), 256):
                _, _, pi, pt = self.project(model, images[i : i + 256], captions[i : i + 256])
                img_parts.append(pi.float().cpu())
                txt_parts.append(pt.float().cpu())
        model.train(was_model)
        self.train(was_self)
        img_f, txt_f = torch.cat(img_parts), torch.cat(txt_parts)
        seed = self.seed + 104729 * (epoch + 1)
        il, ic = kmeans(img_f.numpy(), p.clusters, p.kmeans_restarts, p.kmeans_max_iter, seed)
        tl, tc = kmeans(txt_f.numpy(), p.clusters, p.kmeans_restarts, p.kmeans_max_iter, seed + 1)
        img_labels, txt_labels = torch.from_numpy(il), torch.from_numpy(tl)
        img_c, txt_c = torch.from_numpy(ic), torch.from_numpy(tc)
        if p.pbt:  # image prototypes from the text clusters, text prototypes from the image clusters
            img_target = back_translate(txt_labels, img_f, len(txt_c))
            txt_target = back_translate(img_labels, txt_f, len(img_c))
        else:
            img_target, txt_target = txt_c, img_c
        dev = images.device
        self.prototypes = {
            "img_labels": img_labels.to(dev), "txt_labels": txt_labels.to(dev),
            "img_centroids": img_c.to(dev), "txt_centroids": txt_c.to(dev),
            "img_target": img_target.to(dev), "txt_target": txt_target.to(dev),
        }
        self.episodes += 1

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Parts]:
        p: ProtoClipParams = self.params
        img, txt, pi, pt = self.project(model, batch.images, batch.captions)
        l_clip = clip_loss(img, txt, model.logit_scale.exp())
        if not self.prototypes or p.w_proto == 0:
            return p.w_clip * l_clip, {"clip": l_clip}
        pr, idx = self.prototypes, batch.indices.to(img.device)
        scale = self.logit_scale_proto.exp()
        l_i2t = prototype_loss(pi, pr["img_target"], pr["txt_centroids"], pr["txt_labels"][idx], scale,
                               p.target_temperature)
        l_t2i = prototype_loss(pt, pr["txt_target"], pr["img_centroids"], pr["img_labels"][idx], scale,
                               p.target_temperature)
        l_proto = (l_i2t + l_t2i) / 2
        return p.w_clip * l_clip + p.w_proto * l_proto, {"clip": l_clip, "proto": l_proto}

    def card_extra(self) -> dict[str, Any]:
        return {"episodes_clustered": self.episodes, "clusters": self.params.clusters, "pbt": self.params.pbt}

    @classmethod
    def train_model(cls, model: nn.Module, recipe: Any, split: Any, num_classes: int, seed: int,
                    device: torch.device, progress: bool = False) -> Any:
        from cl_bench.methods.image_text.trainer import check_model, train_image_text

        check_model(model, "protoclip")
        objective = cls(**recipe.params)
        objective.build_heads(int(model.embed_dim), seed)
        return train_image_text(model, objective, recipe, split, seed, device, progress)
