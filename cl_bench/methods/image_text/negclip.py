"""Objective ``negclip``: CLIP with composition-aware hard negatives (Yuksekgonul et al., "When and
why vision-language models behave like bags-of-words", ICLR 2023, arXiv 2210.01936).

As the authors' open_clip fork (vinid/neg_clip: ``CsvDataset.__getitem__``, ``train_one_epoch``,
``ClipLoss``) builds a step from a batch of B image–caption pairs:

- every image i brings ONE hard-negative caption, drawn at random each time from its list (here
  the scenes' verified negatives: a colour / shape / count / left-right / direction swap of a true
  caption, checked false for the scene — :func:`cl_bench.data.scenes.captions.hard_negatives`),
  and, as its caption in that step, the true caption that negative swaps (``paired_positives``:
  each row of the fork's CSV is a caption with its own negative, so "a red triangle pointing down"
  is always weighed against "a red triangle pointing up", never against an unrelated "a red
  triangle"; an image without negatives keeps the epoch's caption);
- with ``hard_images: k > 0`` every image also brings a "strong alternative" image j drawn at
  random among its k nearest neighbours, with j's caption and one of j's hard negatives (the
  paper, Fig. 3: "for each image, we sample strong alternatives among the dataset using nearest
  neighbours"; the fork reads them from the ``neg_image`` column of its CSV);
- images [I; I'] (2B) and texts [T; T'; H; H'] (4B): image→text is a softmax over all 4B texts,
  text→image over the 2B true captions only (``logits_per_text[:len(logits_per_image)]``), the two
  cross-entropies averaged (:func:`cl_bench.methods.image_text.losses.negclip_loss`).

Deviation: NegCLIP fine-tunes a pretrained CLIP and takes the neighbours in its image space
once; scene-clip trains from scratch and has no pretrained image tower, so the neighbours are
recomputed at the start of every epoch in the model's own current image space (cosine, the
image itself excluded; epoch 1's come from the initial weights). An image whose split has no
hard negative contributes no negative text.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.methods.image_text.losses import negclip_loss
from cl_bench.methods.image_text.trainer import Batch, ImageTextObjective, ImageTextParams, embed_all_images


class NegClipParams(ImageTextParams):
    hard_images: int = Field(default=3, ge=0, le=64)  # alternative image among this many neighbours (0: none)
    all_negatives: bool = False  # every hard negative of each image per step, not one drawn at random
    # the image's caption in a step is the true caption its drawn negative swaps (the fork's CSV rows:
    # caption + its own negative); False: the epoch's caption, whatever negative is drawn. With
    # all_negatives (several negatives, several positives) the epoch's caption is kept.
    paired_positives: bool = True


def nearest_neighbours(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """[N, k] indices of each row's k most cosine-similar other rows (most similar first)."""
    n = len(embeddings)
    if not 0 < k < n:
        raise ValueError(f"need 0 < k < {n} neighbours, got {k}")
    z = F.normalize(embeddings.float(), dim=-1)
    sim = z @ z.T
    sim.fill_diagonal_(float("-inf"))
    return sim.topk(k, dim=1).indices


def draw(options: list[Any], gen: torch.Generator) -> Any:
    """One element of ``options``, uniformly with ``gen``."""
    return options[int(torch.randint(len(options), (1,), generator=gen).item())]


@register("objective", "negclip", params=NegClipParams)
class NegClip(ImageTextObjective):
    needs_hard_negatives = True

    def __init__(self, embed_dim: int = 0, num_classes: int = 0, **params: Any) -> None:
        super().__init__(embed_dim, num_classes, **params)
        self._images: torch.Tensor | None = None
        self._captions: list[str] = []
        self._neighbours: torch.Tensor | None = None
        self._negatives_seen = [0, 0]  # negative texts, anchors (for the card)

    def start_epoch(self, model: nn.Module, images: torch.Tensor, captions: list[str], epoch: int) -> None:
        self._captions = captions
        k = self.params.hard_images
        if k > 0:
            if k >= len(images):
                raise ClBenchError(f"negclip: hard_images {k} needs more than {k} training images, got {len(images)}")
            self._images = images
            self._neighbours = nearest_neighbours(torch.from_numpy(embed_all_images(model, images)), k)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ids = batch.indices.tolist()
        images, captions = batch.images, list(batch.captions)
        if self._neighbours is not None and self._images is not None:
            alt = [int(draw(self._neighbours[i].tolist(), batch.gen)) for i in ids]
            images = torch.cat([images, self._images[torch.tensor(alt, device=images.device)]])
            captions += [self._captions[j] for j in alt]
            ids = ids + alt
        if self.params.all_negatives:
            negatives = [t for i in ids for t in batch.hard_negatives[i]]
        elif self.params.paired_positives:
            if batch.hard_negative_positives is None:
                raise ClBenchError("negclip: paired_positives needs the true caption each hard negative swaps; this "
                                   "training split has none (set train.params.paired_positives: false)")
            negatives = []
            for slot, i in enumerate(ids):
                if batch.hard_negatives[i]:
                    k = draw(range(len(batch.hard_negatives[i])), batch.gen)
                    negatives.append(batch.hard_negatives[i][k])
                    captions[slot] = batch.hard_negative_positives[i][k]
        else:
            negatives = [draw(batch.hard_negatives[i], batch.gen) for i in ids if batch.hard_negatives[i]]
        img = F.normalize(model.image_features(images)[0], dim=-1)
        txt = F.normalize(model.text_features(captions + negatives)[0], dim=-1)
        m = len(captions)
        self._negatives_seen[0] += len(negatives)
        self._negatives_seen[1] += m
        loss = negclip_loss(img, txt[:m], txt[m:], model.logit_scale.exp())
        return loss, {}

    def card_extra(self) -> dict[str, Any]:
        seen, anchors = self._negatives_seen
        return {"hard_images": self.params.hard_images,
                "negatives_per_image": round(seen / anchors, 4) if anchors else 0.0}
