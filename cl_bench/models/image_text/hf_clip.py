"""``hf-clip``: a Hugging Face ``CLIPModel`` (and its tokenizer/image processor) from a local directory.

Params: ``path`` — a local directory written by ``save_pretrained`` (``config.json``, weights,
tokenizer files, ``preprocessor_config.json``); or leave it out and pass the directory as
``--checkpoint DIR`` (``load_checkpoint``). Nothing is downloaded (``local_files_only``).

Texts: the directory's tokenizer (``AutoTokenizer``), padded, truncated to the text tower's
``max_position_embeddings``. Images (float [N, 3, H, W] in [0, 1]): the directory's
``CLIPImageProcessor`` settings (``size.shortest_edge`` resize, ``crop_size`` centre crop,
``image_mean``/``image_std``) applied on tensors (:mod:`cl_bench.models.image_text.clip_preprocess`).
Embeddings: ``get_image_features`` / ``get_text_features`` (the projected features), L2-normalised.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.image_text.clip_preprocess import normalize, resize_center_crop
from cl_bench.models.interfaces.image_text import ImageTextEncoder
from cl_bench.specs import validate_params


class HFClipParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None  # a local HF CLIP directory (else: --checkpoint DIR)
    batch_size: int = Field(default=64, ge=1)


def hf_directory(path: Path | str) -> Path:
    folder = Path(path).expanduser()
    folder = folder if folder.is_dir() else folder.parent
    if not (folder / "config.json").is_file():
        raise ClBenchError(f"{path} is not a Hugging Face model directory (no config.json)")
    return folder


def pooled(out: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output whose ``pooler_output``
    holds the projected features (transformers 5)."""
    return out if torch.is_tensor(out) else out.pooler_output


def settings_tag(settings: dict[str, Any]) -> torch.Tensor:
    blob = json.dumps(settings, sort_keys=True, default=str)
    return torch.tensor(list(hashlib.sha256(blob.encode()).digest()), dtype=torch.uint8)


class HFClip(ImageTextEncoder):
    """``CLIPModel`` + tokenizer + image preprocessing settings, loaded from a directory."""

    def __init__(self, batch_size: int = 64) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.hf: Any = None
        self.tokenizer: Any = None
        self.embed_dim = 0
        # a state entry so that obtain_model lets --checkpoint DIR reach load_checkpoint
        self.register_buffer("settings_tag", settings_tag({"unloaded": True}))

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        folder = hf_directory(path)
        try:
            model = CLIPModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            proc = CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ClBenchError(f"cannot load a CLIP model from {folder}: {str(e).splitlines()[0]}") from None
        self.hf, self.tokenizer = model.eval(), tok
        self.embed_dim = int(model.config.projection_dim)
        crop = proc.crop_size if proc.do_center_crop else proc.size
        self.image_size = (int(crop["height"]), int(crop["width"]))
        shortest = (proc.size or {}).get("shortest_edge") if proc.do_resize else None
        self.resize_mode = "shortest" if shortest else "squash"
        self.shortest_edge = int(shortest) if shortest else None
        self.mean, self.std = tuple(proc.image_mean), tuple(proc.image_std)
        self.max_length = int(model.config.text_config.max_position_embeddings)
        self.settings_tag = settings_tag({"size": self.image_size, "mode": self.resize_mode, "edge": self.shortest_edge,
                                          "mean": self.mean, "std": self.std, "max_length": self.max_length})
        return {"path": str(folder), "format": "huggingface", "model_class": type(model).__name__}

    def _ready(self) -> Any:
        if self.hf is None:
            raise ClBenchError("arch hf-clip has no model loaded: set arch.params.path or pass --checkpoint DIR")
        return self.hf

    @property
    def logit_scale(self) -> torch.Tensor:
        return self._ready().logit_scale

    def _device(self) -> torch.device:
        return next(self._ready().parameters()).device

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        hf = self._ready()
        x = resize_center_crop(images.float().to(self._device()), self.image_size, self.resize_mode,
                               shortest_edge=self.shortest_edge)
        return F.normalize(pooled(hf.get_image_features(pixel_values=normalize(x, self.mean, self.std))), dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        hf = self._ready()
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(self._device()) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        return F.normalize(pooled(hf.get_text_features(**enc)), dim=-1)


@register("arch", "hf-clip")
def build_hf_clip(params: dict[str, Any], **_: Any) -> HFClip:
    p: HFClipParams = validate_params(HFClipParams, params, where="arch hf-clip")
    model = HFClip(p.batch_size)
    if p.path is not None:
        model.checkpoint_report = model.load_checkpoint(Path(p.path))
    return model
