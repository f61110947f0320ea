"""``hf-vlm-embedder``: a Hugging Face vision-language model used as an embedder (MMEB).

As VLM2Vec, UniME and LCO-Emb make embeddings from an MLLM: the item (text, image, or both)
becomes one prompt, the model runs once, and the embedding is the final hidden state of the
LAST real token (``pooling: last``, VLM2Vec's EOS pooling) or the mean over the real tokens
(``pooling: mean``), L2-normalised.

Prompt: MMEB texts mark the image with Phi-3-V's ``<|image_1|>`` (``image_placeholder``); it is
replaced by the processor's own image token (``processor.image_token``, e.g. LLaVA's
``<image>``, Qwen2-VL's vision tokens). An item with an image but no placeholder gets the image
token prepended (followed by a newline); a text-only item has any placeholder removed.
``embed_images`` (zero-shot / retrieval / MMVP) embeds each image with ``image_prompt`` and
``embed_texts`` each text through ``text_prompt`` (``{}`` = the text). Sequences are RIGHT-padded
so that with causal attention the last real token never attends to padding and keeps its
position ids (tests check batch = one-by-one).

Prompt formats (:mod:`cl_bench.models.image_text.vlm_prompts`, one per paper): ``template`` wraps each item's
text (``{text}``, ``{system}``: UniME's and Gen2Embed's strings); ``chat_template`` renders it through
the processor's own chat template instead (LCO-Emb); ``system_prompt``; ``item_suffix`` by the
item's kind (text / image / both); ``prompting: hierarchical`` switches on the two-level prompt of
arXiv 2508.00955 (a system instruction, and a representation instruction on query items) for any
model. Items know their role (``query`` / ``candidate``) from the protocol: MMEB's sides,
``embed_texts`` queries and ``embed_images`` candidates.

Params: ``path`` (a local HF directory: config, weights, processor/tokenizer files; or pass the
directory as ``--checkpoint DIR``), ``pooling``, ``image_placeholder``, ``image_prompt``,
``text_prompt``, the prompt formats above, ``max_length``, ``batch_size``. The model class is
``AutoModelForImageTextToText`` (fallback ``AutoModelForVision2Seq``), the processor
``AutoProcessor``; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.image_text.hf_clip import hf_directory, settings_tag
from cl_bench.models.interfaces.image_text import ImageTextEncoder
from cl_bench.models.image_text.vlm_prompts import HIERARCHICAL_SYSTEM, chat_messages, item_pieces, render_plain, with_suffixes
from cl_bench.specs import validate_params


class VLMEmbedderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    pooling: Literal["last", "mean"] = "last"
    image_placeholder: str = "<|image_1|>"
    image_prompt: str = "<|image_1|>\nRepresent the given image."
    text_prompt: str = "{}"
    max_length: int | None = Field(default=None, ge=8)
    batch_size: int = Field(default=8, ge=1)
    # the prompt format (cl_bench.models.image_text.vlm_prompts): a plain template, or the processor's chat template
    template: str = "{text}"
    chat_template: bool = False
    system_prompt: str | None = None
    item_suffix: dict[Literal["text", "image", "both"], str] = Field(default_factory=dict)
    prompting: Literal["plain", "hierarchical"] = "plain"  # hierarchical: arXiv 2508.00955's two levels


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """A float [3, H, W] image in [0, 1] as uint8 [H, W, 3] (what HF image processors expect)."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, L, H] hidden states -> [B, H]: the last real token's state, or the mean of real tokens."""
    mask = mask.to(hidden.device)
    if pooling == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    positions = torch.arange(mask.shape[1], device=hidden.device).expand_as(mask)
    last = (positions * mask.long()).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class VLMEmbedder(ImageTextEncoder):
    """An HF vision-language model + processor behind the image–text interface."""

    def __init__(self, p: VLMEmbedderParams) -> None:
        super().__init__()
        self.p = p
        self.batch_size = p.batch_size
        self.hf: Any = None
        self.processor: Any = None
        self.embed_dim = 0
        self.register_buffer("settings_tag", settings_tag({"unloaded": True}))

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        import transformers

        folder = hf_directory(path)
        model = None
        errors = []
        for name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq"):
            cls = getattr(transformers, name, None)
            if cls is None:
                continue
            try:
                model = cls.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
                break
            except (OSError, ValueError, KeyError) as e:
                errors.append(str(e).splitlines()[0])
        if model is None:
            raise ClBenchError(f"cannot load a vision-language model from {folder}: {errors[-1] if errors else '?'}")
        try:
            processor = transformers.AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ClBenchError(f"cannot load the processor of {folder}: {str(e).splitlines()[0]}") from None
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is None or getattr(processor, "image_token", None) is None:
            raise ClBenchError(f"{folder}: the processor has no tokenizer or no image_token; not a VLM processor")
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.hf, self.processor = model.eval(), processor
        cfg = model.config
        text_cfg = getattr(cfg, "text_config", None) or cfg
        self.embed_dim = int(text_cfg.hidden_size)
        self.settings_tag = settings_tag({**self.p.model_dump(exclude={"path", "batch_size"}),
                                          "image_token": processor.image_token})
        return {"path": str(folder), "format": "huggingface", "model_class": type(model).__name__}

    def _ready(self) -> Any:
        if self.hf is None:
            raise ClBenchError("arch hf-vlm-embedder has no model loaded: set arch.params.path or pass --checkpoint DIR")
        return self.hf

    def prompt(self, text: str | None, has_image: bool, role: str | None = None) -> str:
        """The item's prompt (see the module doc and :mod:`cl_bench.models.image_text.vlm_prompts`)."""
        p = self.p
        pieces, kind = item_pieces(text, has_image, p.image_placeholder)
        hierarchical = p.prompting == "hierarchical"
        pieces = with_suffixes(pieces, kind, has_image, role, dict(p.item_suffix), hierarchical)
        system = p.system_prompt if p.system_prompt is not None else (HIERARCHICAL_SYSTEM if hierarchical else None)
        if p.chat_template or (hierarchical and p.template == "{text}"):
            if not getattr(self.processor, "chat_template", None):
                raise ClBenchError("this vision-language model's processor has no chat template; set arch param "
                                   "template (a string with {text} and {system}) instead of chat prompting")
            return self.processor.apply_chat_template(chat_messages(pieces, system), tokenize=False,
                                                      add_generation_prompt=True)
        return render_plain(pieces, self.processor.image_token, p.template, system)

    def _embed_batch(self, texts: list[str | None], images: list[torch.Tensor | None],
                     role: str | None = None) -> torch.Tensor:
        hf = self._ready()
        prompts = [self.prompt(t, im is not None, role) for t, im in zip(texts, images)]
        pics = [to_uint8_hwc(im) for im in images if im is not None]
        kwargs: dict[str, Any] = {"text": prompts, "return_tensors": "pt", "padding": True}
        if pics:
            kwargs["images"] = pics
        if self.p.max_length is not None:
            kwargs.update(truncation=True, max_length=self.p.max_length)
        enc = self.processor(**kwargs)
        device = next(hf.parameters()).device
        enc = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in enc.items()}
        out = hf(**enc, output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1].float()
        return F.normalize(pool_hidden(hidden, enc["attention_mask"], self.p.pooling), dim=-1)

    def embed_pairs(self, texts: list[str | None], images: list[torch.Tensor | None],
                    role: str | None = None) -> torch.Tensor:
        if len(texts) != len(images):
            raise ValueError(f"{len(texts)} texts but {len(images)} images")
        out = [self._embed_batch(texts[i : i + self.batch_size], images[i : i + self.batch_size], role).cpu()
               for i in range(0, len(texts), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed_pairs([self.p.image_prompt] * len(images), list(images), role="candidate")

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.embed_pairs([self.p.text_prompt.replace("{}", t) for t in texts], [None] * len(texts), role="query")


@register("arch", "hf-vlm-embedder")
def build_vlm_embedder(params: dict[str, Any], **_: Any) -> VLMEmbedder:
    p: VLMEmbedderParams = validate_params(VLMEmbedderParams, params, where="arch hf-vlm-embedder")
    model = VLMEmbedder(p)
    if p.path is not None:
        model.checkpoint_report = model.load_checkpoint(Path(p.path))
    return model
