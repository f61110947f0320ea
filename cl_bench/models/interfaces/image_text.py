"""The image–text interface: two towers (or one multimodal model) mapping into one space.

Every image–text method (trained fresh: clip, protoclip, tcl, dreamlip, mcl-clip, dcl-clip;
loaded: open_clip, Hugging Face CLIPModel, a generic vision-language embedder) is an
:class:`ImageTextEncoder`. Protocols (zero_shot, retrieval, mmeb, mmvp_vlm) use only this.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cl_bench.data.image_text.types import ImageList
from cl_bench.data.text.types import TextSplit
from cl_bench.extract import EmbedPlan, collect
from cl_bench.feed import Feeder


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

    def embed_plan(self, split: Any, device: torch.device, feeder: Feeder | None = None) -> EmbedPlan:
        """The engine's cached-feature hook: an ImageList, a TextSplit, or MMEB items (anything
        with ``item(i)`` -> (text, image) and a ``fingerprint``), in batches of ``batch_size``.
        Images decoded from files (``lazy`` lists, MMEB items) come through the feeder's workers."""
        feeder = feeder or Feeder(0, device)
        bs = self.batch_size
        self.to(device)

        def images(start: int) -> Iterator[torch.Tensor]:
            if getattr(split, "lazy", False):
                for x in feeder.loader(_Items(split), start, bs):
                    yield self.embed_images(feeder.to_device(x).float().div_(255.0))
            else:
                for i in range(start, len(split), bs):  # images at their own size: a size at a time
                    groups = split.shape_groups(i, min(i + bs, len(split)))
                    if len(groups) == 1:
                        yield self.embed_images(groups[0][1].to(device))
                        continue
                    parts = [(pos, self.embed_images(x.to(device))) for pos, x in groups]
                    out = parts[0][1].new_zeros(sum(len(pos) for pos, _ in parts), parts[0][1].shape[-1])
                    for pos, e in parts:
                        out[torch.from_numpy(pos)] = e
                    yield out

        def texts(start: int) -> Iterator[torch.Tensor]:
            for i in range(start, len(split), bs):
                yield self.embed_texts(split.texts[i : i + bs])

        def pairs(start: int) -> Iterator[torch.Tensor]:
            for texts_, ims in feeder.loader(_Items(split), start, bs, collate=_pair_batch):
                yield self.embed_pairs(texts_, [None if im is None else im.to(device) for im in ims],
                                       role=getattr(split, "role", None))

        if isinstance(split, ImageList):
            run = images
        elif isinstance(split, TextSplit):
            run = texts
        elif hasattr(split, "item"):  # cl_bench.data.image_text.mmeb.PairItems: text and/or image items
            run = pairs
        else:
            raise TypeError(f"an image–text encoder embeds an ImageList or a TextSplit, not {type(split).__name__}")

        def in_eval(start: int) -> Iterator[torch.Tensor]:
            self.eval()
            yield from run(start)

        return EmbedPlan(len(split), bs, in_eval)

    def embed_split(self, split: Any, device: torch.device) -> np.ndarray:
        """Embeddings of ``split`` in memory (what :meth:`embed_plan` streams)."""
        with torch.no_grad():
            return collect(self.embed_plan(split, device), self.embed_dim)


class _Items(torch.utils.data.Dataset):
    """A split's ``item(i)`` as a map-style dataset (what loader workers read)."""

    def __init__(self, split: Any) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> Any:
        return self.split.item(i)


def _pair_batch(items: list[tuple[str, torch.Tensor | None]]) -> tuple[list[str], list[torch.Tensor | None]]:
    return [t for t, _ in items], [im for _, im in items]
