"""``albef-itc``: the image-text contrastive towers of an ALBEF-family checkpoint (TCL's release).

TCL (uta-smile/TCL, built on salesforce/ALBEF) scores retrieval in two steps: the contrastive
(ITC) similarity of its unimodal embeddings ranks all candidates, then the fusion encoder's ITM
head re-ranks the top k. cl_bench's protocols score embeddings, so this adapter is the ITC step,
as TCL's ``Retrieval.py`` computes it:

- image: ``visual_encoder`` (their ``models/vit.py``: a ViT with timm's module names - patch 16,
  class token, LayerNorm eps 1e-6, qkv bias), the class token after the final norm, then
  ``vision_proj`` and L2 normalisation; input resized (no crop) to ``image_size`` with bicubic
  interpolation and normalised with CLIP's mean/std (their ``create_dataset``); a checkpoint whose
  ``pos_embed`` was trained at another resolution is resampled bicubically, as ``interpolate_pos_embed``.
- text: ``pre_caption`` (lower case, their punctuation stripped, at most ``max_words`` words),
  BERT's WordPiece tokenizer padded/truncated to ``max_words`` tokens, the first ``fusion_layer``
  BERT layers (``mode='text'``: the text-only part of their BertModel), the [CLS] state, then
  ``text_proj`` and L2 normalisation.

Checkpoint: ``torch.save({'model': state_dict, ...})``; a pre-training file holds BertForMaskedLM
keys (``text_encoder.bert.*``), renamed by removing ``bert.`` as their Retrieval.py does. The fusion
layers, MLM/ITM heads, momentum copies and queues are not part of the two towers. ``temp`` is
kept: ``logit_scale = log(1 / temp)``. The tokenizer files (bert-base-uncased: vocab.txt) come from
``tokenizer`` or, by default, the checkpoint's folder.
"""

from __future__ import annotations

import math
import re
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.image_text.clip_preprocess import normalize, resize_center_crop
from cl_bench.models.interfaces.image_text import ImageTextEncoder
from cl_bench.specs import ReleasedWeights, validate_params

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class AlbefITCParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(default=384, ge=16)
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    text_width: int = 768
    text_heads: int = 12
    text_intermediate: int = 3072
    fusion_layer: int = Field(default=6, ge=1)  # the text-only layers of their 12-layer BERT
    vocab_size: int = 30522
    max_positions: int = 512
    embed_dim: int = 256
    max_words: int = Field(default=30, ge=1)
    tokenizer: str | None = None  # a folder with bert-base-uncased's tokenizer files
    batch_size: int = Field(default=64, ge=1)


def pre_caption(caption: str, max_words: int) -> str:
    """ALBEF/TCL ``dataset/utils.py::pre_caption``: lower case, drop ,.'!?"()*#:;~, hyphens and
    slashes to spaces, '<person>' to 'person', squeeze spaces, keep the first ``max_words`` words."""
    text = re.sub(r"([,.'!?\"()*#:;~])", "", caption.lower()).replace("-", " ").replace("/", " ")
    text = re.sub(r"\s{2,}", " ", text.replace("<person>", "person")).rstrip("\n").strip(" ")
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


class AlbefITC(ImageTextEncoder):
    """``visual_encoder`` + ``vision_proj`` and ``text_encoder`` (first ``fusion_layer`` layers) + ``text_proj``."""

    def __init__(self, p: AlbefITCParams) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer
        from transformers import BertConfig, BertModel

        self.p, self.batch_size, self.embed_dim = p, p.batch_size, p.embed_dim
        self.visual_encoder = VisionTransformer(
            img_size=p.image_size, patch_size=p.patch_size, embed_dim=p.vision_width, depth=p.vision_layers,
            num_heads=p.vision_heads, mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_classes=0, global_pool="token")
        cfg = BertConfig(vocab_size=p.vocab_size, hidden_size=p.text_width, num_hidden_layers=p.fusion_layer,
                         num_attention_heads=p.text_heads, intermediate_size=p.text_intermediate,
                         max_position_embeddings=p.max_positions, layer_norm_eps=1e-12, pad_token_id=0)
        self.text_encoder = BertModel(cfg, add_pooling_layer=False)
        self.vision_proj = nn.Linear(p.vision_width, p.embed_dim)
        self.text_proj = nn.Linear(p.text_width, p.embed_dim)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.tokenizer: Any = None

    @property
    def logit_scale(self) -> torch.Tensor:
        return -torch.log(self.temp.detach())

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        size = (self.p.image_size, self.p.image_size)
        x = normalize(resize_center_crop(images.float().to(self._device()), size, "squash"), CLIP_MEAN, CLIP_STD)
        return F.normalize(self.vision_proj(self.visual_encoder(x)), dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise ClBenchError("arch albef-itc has no tokenizer: pass --checkpoint (with bert-base-uncased's "
                               "vocab.txt beside it) or --arch-param tokenizer=DIR")
        enc = self.tokenizer([pre_caption(t, self.p.max_words) for t in texts], padding="max_length",
                             truncation=True, max_length=self.p.max_words, return_tensors="pt").to(self._device())
        hidden = self.text_encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return F.normalize(self.text_proj(hidden[:, 0]), dim=-1)

    def load_checkpoint(self, path: Path, layout: ReleasedWeights | None = None) -> dict[str, Any]:
        """The two towers from an ALBEF/TCL checkpoint (see the module doc) and the tokenizer."""
        from timm.layers import resample_abs_pos_embed
        from transformers import AutoTokenizer

        from cl_bench.models.weights.checkpoint import read_state_dict, remap_keys
        from cl_bench.models.weights.fingerprint import file_sha256
        from cl_bench.models.weights.released_formats import check_declared_layout

        path = Path(path).expanduser()
        state = {k.replace("bert.", ""): v for k, v in read_state_dict(path).items()}  # as their Retrieval.py
        own = self.state_dict()
        pos = state.get("visual_encoder.pos_embed")
        target = own["visual_encoder.pos_embed"]
        if pos is not None and pos.shape != target.shape:
            grid = int(math.isqrt(target.shape[1] - 1))
            state["visual_encoder.pos_embed"] = resample_abs_pos_embed(
                pos, (grid, grid), num_prefix_tokens=1, interpolation="bicubic", antialias=False)
        mapped, dropped = remap_keys(state, set(own), prefix="")
        if layout is not None and layout.encoder_prefix is not None:
            check_declared_layout(path, dropped, layout)
        missing = sorted(set(own) - set(mapped))
        if missing:
            raise ClBenchError(f"checkpoint {path.name} does not fit arch albef-itc: {len(missing)} missing keys, "
                               f"e.g. {missing[0]!r}; is it an ALBEF/TCL checkpoint of this size?")
        wrong = [k for k in own if mapped[k].shape != own[k].shape]
        if wrong:
            raise ClBenchError(f"checkpoint {path.name}: {wrong[0]!r} has shape {list(mapped[wrong[0]].shape)}, "
                               f"arch albef-itc expects {list(own[wrong[0]].shape)}")
        self.load_state_dict(mapped, strict=True)
        folder = Path(self.p.tokenizer).expanduser() if self.p.tokenizer else path.parent
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ClBenchError(f"arch albef-itc: no BERT tokenizer in {folder} ({str(e).splitlines()[0]}); put "
                               "bert-base-uncased's vocab.txt there or pass --arch-param tokenizer=DIR") from None
        return {"path": str(path), "sha256": file_sha256(path), "format": "albef", "n_loaded": len(mapped),
                "dropped": dropped, "tokenizer": str(folder)}


@register("arch", "albef-itc")
def build_albef_itc(params: dict[str, Any], **_: Any) -> AlbefITC:
    p: AlbefITCParams = validate_params(AlbefITCParams, params, where="arch albef-itc")
    return AlbefITC(p)
