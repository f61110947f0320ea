"""The image–text interface: two towers (or one multimodal model) mapping into one space.

Every image–text method (trained fresh: clip, protoclip, tcl, dreamlip, mcl-clip, dcl-clip;
loaded: open_clip, Hugging Face CLIPModel, a generic vision-language embedder) is an
:class:`ImageTextEncoder`. Protocols (zero_shot, retrieval, mmeb, mmvp_vlm) use only this.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cl_bench.data.image_text_types import ImageList
from cl_bench.data.text_types import TextSplit


class ImageTextEncoder(nn.Module):
    """``embed_images`` / ``embed_texts`` map into one shared space of size ``embed_dim``.

    Images come as float [N, 3, H, W] in [0, 1] (the encoder resizes/normalises itself); texts
    as a list of str. Outputs are L2-normalised [N, D] float tensors, so a dot product is the
    cosine similarity. ``logit_scale`` is the log of the inverse temperature (CLIP's
    parametrisation: scores are ``exp(logit_scale) * cos``).
    """

    embed_dim: int
    batch_size: int = 256
    embeds_pair_items: bool = True  # embed_split also takes MMEB items (cached like any split)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed_texts(self, texts: list[str]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed_pairs(self, texts: list[str | None], images: list[torch.Tensor | None],
                    role: str | None = None) -> torch.Tensor:
        """Embed items that are text, image, or both (MMEB queries/candidates).

        Two-tower default, as MMEB scores CLIP-style baselines: the normalised sum of the
        text and image embeddings where both are present. Multimodal models override this;
        ``role`` ("query" / "candidate", when known) lets a prompt-based embedder word them apart.
        """
        if len(texts) != len(images):
            raise ValueError(f"{len(texts)} texts but {len(images)} images")
        out = torch.zeros(len(texts), self.embed_dim)
        ti = [i for i, t in enumerate(texts) if t]
        ii = [i for i, im in enumerate(images) if im is not None]
        if ti:
            out[ti] += self.embed_texts([texts[i] for i in ti]).float().cpu()
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i in ii:  # images at their own size (real MMEB) are embedded a shape at a time
            by_shape.setdefault(tuple(images[i].shape), []).append(i)
        for group in by_shape.values():
            out[group] += self.embed_images(torch.stack([images[i] for i in group])).float().cpu()
        return F.normalize(out, dim=-1)

    def embed_split(self, split: Any, device: torch.device) -> np.ndarray:
        """The engine's cached-feature hook: an ImageList, a TextSplit, or MMEB items (anything
        with ``batches(n)`` yielding (texts, images) and a ``fingerprint``), in batches."""
        self.eval()
        self.to(device)
        out: list[torch.Tensor] = []
        with torch.no_grad():
            if isinstance(split, ImageList):
                order: list[np.ndarray] = []
                for idx, batch in split.same_size_batches(self.batch_size):  # in order unless sizes vary
                    order.append(idx)
                    out.append(self.embed_images(batch.to(device)).float().cpu())
                if order and split.variable:  # back to the split's order
                    out = [torch.cat(out)[torch.from_numpy(np.argsort(np.concatenate(order), kind="stable"))]]
            elif isinstance(split, TextSplit):
                for i in range(0, len(split), self.batch_size):
                    out.append(self.embed_texts(split.texts[i : i + self.batch_size]).float().cpu())
            elif hasattr(split, "batches"):  # cl_bench.data.mmeb.PairItems: text and/or image items
                for texts, images in split.batches(self.batch_size):
                    ims = [None if im is None else im.to(device) for im in images]
                    out.append(self.embed_pairs(texts, ims, role=getattr(split, "role", None)).float().cpu())
            else:
                raise TypeError(f"an image–text encoder embeds an ImageList or a TextSplit, not {type(split).__name__}")
        if not out:
            return np.zeros((0, self.embed_dim), np.float32)
        return torch.cat(out).numpy()
