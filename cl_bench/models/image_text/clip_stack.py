"""``open-clip-stack``: several open_clip models of one architecture, their features concatenated.

The released form of Multistage Contrastive Learning for CLIP (MajorDavidZhang/MCL, ``MMVP.ipynb``,
"evaluate based on the concatenation of the representations from a list of clip models"): stage 0
is the pretrained CLIP, stage k the model fine-tuned in stage k; an image (a text) is encoded by
every stage, the raw ``encode_image`` (``encode_text``) outputs are concatenated and the
concatenation is L2-normalised (not each stage first: the notebook normalises the joined vector).

Params: ``model`` (the open_clip architecture of every stage, e.g. ``ViT-L-14-quickgelu`` for
OpenAI's ViT-L/14, which the notebook builds with ``force_quick_gelu=True``), ``files`` (one weight
file per stage, in stage order, found in the folder passed as ``--checkpoint DIR``), ``batch_size``.
Each file is read by the open-clip adapter's loader (a state dict, optionally under ``state_dict``
and DDP's ``module.``). Every stage's own tokenizer and preprocessing are open_clip's for ``model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.image_text import ImageTextEncoder
from cl_bench.models.image_text.open_clip_adapter import OpenClipEncoder
from cl_bench.models.weights.released_formats import check_declared_layout
from cl_bench.specs import ReleasedWeights, validate_params


class OpenClipStackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    files: list[str] = Field(min_length=1)
    batch_size: int = Field(default=64, ge=1)


class OpenClipStack(ImageTextEncoder):
    """``embed_* = normalize(cat_k stage_k.encode_*)`` over the stages; ``stages[k]`` is stage k."""

    def __init__(self, p: OpenClipStackParams) -> None:
        super().__init__()
        self.files = list(p.files)
        self.batch_size = p.batch_size
        self.stages = nn.ModuleList([OpenClipEncoder(p.model, p.batch_size) for _ in p.files])
        self.embed_dim = sum(s.embed_dim for s in self.stages)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self._device())
        return F.normalize(torch.cat([s.clip.encode_image(s.preprocess(x)).float() for s in self.stages], -1), dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        feats = [s.clip.encode_text(s.tokenizer(list(texts)).to(self._device())).float() for s in self.stages]
        return F.normalize(torch.cat(feats, -1), dim=-1)

    def load_checkpoint(self, path: Path, layout: ReleasedWeights | None = None) -> dict[str, Any]:
        """Every stage's weights from the folder ``path`` (``files`` in stage order)."""
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ClBenchError(f"arch open-clip-stack loads one file per stage: pass the folder holding "
                               f"{', '.join(self.files)} as --checkpoint DIR (got {path})")
        absent = [f for f in self.files if not (folder / f).is_file()]
        if absent:
            raise ClBenchError(f"{folder} lacks the stage file(s) {', '.join(absent)}; expected {', '.join(self.files)}")
        reports = []
        for stage, name in zip(self.stages, self.files):
            report = stage.load_checkpoint(folder / name)
            if layout is not None and layout.encoder_prefix is not None:
                check_declared_layout(folder / name, report["dropped"], layout)
            reports.append(report)
        return {"path": str(folder), "format": "open_clip-stack", "stages": reports,
                "n_loaded": sum(r["n_loaded"] for r in reports), "dropped": [d for r in reports for d in r["dropped"]]}


@register("arch", "open-clip-stack")
def build_open_clip_stack(params: dict[str, Any], **_: Any) -> OpenClipStack:
    p: OpenClipStackParams = validate_params(OpenClipStackParams, params, where="arch open-clip-stack")
    return OpenClipStack(p)
