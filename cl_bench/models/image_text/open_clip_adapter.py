"""``open-clip``: an open_clip model (architecture by name) with weights from a local checkpoint.

Params: ``model`` — an open_clip architecture name (``ViT-B-32``, ``RN50``, ``ViT-B-32-quickgelu``
for OpenAI's weights ...; ``local-dir:/path`` also works, offline); ``batch_size``. The model is
built with ``open_clip.create_model_and_transforms(model, pretrained=None)`` (random weights,
no download); the weights come from ``--checkpoint FILE`` (``load_checkpoint``: a
``.safetensors`` file or a ``torch.save`` state dict read with ``weights_only=True``, optionally
under ``state_dict`` and with DDP's ``module.`` prefix; every model key must be present).

Tokenizer: ``open_clip.get_tokenizer(model)`` — for the built-in CLIP models this is open_clip's
own BPE tokenizer whose vocabulary ships inside the package (works offline); a model whose text
tower needs a Hugging Face tokenizer must find it in the local HF cache, else ClBenchError.

Images arrive as float [N, 3, H, W] in [0, 1] and get the model's own ``preprocess_cfg``
(resize mode, size, interpolation, mean/std) on tensors (:mod:`cl_bench.models.image_text.clip_preprocess`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.image_text.clip_preprocess import normalize, resize_center_crop
from cl_bench.models.interfaces.image_text import ImageTextEncoder
from cl_bench.specs import ReleasedWeights
from cl_bench.params import Strict


class OpenClipParams(Strict):

    model: str | None = None  # an open_clip architecture name, or local-dir:/path (an open_clip hub folder)
    batch_size: int = Field(default=64, ge=1)


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError:  # pragma: no cover - a dependency
        raise ClBenchError("arch open-clip needs the open_clip_torch package: pip install open_clip_torch") from None
    return open_clip


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns "No pretrained weights loaded ... initialized randomly" when a model is built
    without weights; here the weights always come next, from the user's checkpoint."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    root, drop = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


class OpenClipEncoder(ImageTextEncoder):
    """Wraps an open_clip ``CLIP``/``CustomTextCLIP`` model and its tokenizer."""

    def __init__(self, model_name: str, batch_size: int = 64) -> None:
        super().__init__()
        open_clip = _import_open_clip()
        self.model_name = model_name
        self.batch_size = batch_size
        try:
            # weights come from load_checkpoint only (a local-dir: folder's file is read there, safely)
            with _quiet_random_init():
                model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=None, load_weights=False)
        except (RuntimeError, ValueError, FileNotFoundError) as e:
            raise ClBenchError(f"arch open-clip: unknown model {model_name!r} ({str(e).splitlines()[0]}); "
                               "see open_clip.list_models()") from None
        self.clip = model.eval()
        try:
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as e:  # noqa: BLE001 - HF tokenizers raise OSError/ValueError/HTTP errors offline
            raise ClBenchError(f"arch open-clip: no tokenizer for {model_name!r} offline ({type(e).__name__}); "
                               "put the tokenizer in the local Hugging Face cache") from None
        cfg = dict(getattr(self.clip.visual, "preprocess_cfg", {}) or {})
        size = cfg.get("size", getattr(self.clip.visual, "image_size", 224))
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        self.std = tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
        self.resize_mode = cfg.get("resize_mode", "shortest")
        self.interpolation = cfg.get("interpolation", "bicubic")
        probe = self.clip.encode_text(self.tokenizer(["a"]))
        self.embed_dim = int(probe.shape[-1])
        blob = json.dumps({"model": model_name, "pre": [self.image_size, self.mean, self.std, self.resize_mode,
                                                        self.interpolation]}, sort_keys=True, default=str)
        self.register_buffer("settings_tag", torch.tensor(list(hashlib.sha256(blob.encode()).digest()),
                                                          dtype=torch.uint8), persistent=False)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    def _device(self) -> torch.device:
        return next(self.clip.parameters()).device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_center_crop(images.float(), self.image_size, self.resize_mode, self.interpolation)
        return normalize(x, self.mean, self.std)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images.to(self._device()))
        return F.normalize(self.clip.encode_image(x).float(), dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(list(texts)).to(self._device())
        return F.normalize(self.clip.encode_text(ids).float(), dim=-1)

    def load_checkpoint(self, path: Path, layout: ReleasedWeights | None = None) -> dict[str, Any]:
        """Load open_clip weights from a file (see the module doc); returns a load report. A released
        ``layout`` names the key prefix to strip and the only other keys the file may hold."""
        from cl_bench.models.weights.checkpoint import read_state_dict
        from cl_bench.models.weights.fingerprint import file_sha256
        from cl_bench.models.weights.released_formats import check_declared_layout

        state = read_state_dict(Path(path))
        prefix = layout.encoder_prefix if layout is not None and layout.encoder_prefix is not None else None
        if prefix is None and state and all(k.startswith("module.") for k in state):
            prefix = "module."
        origin = {(k[len(prefix):] if prefix and k.startswith(prefix) else k): k for k in state}
        state = {new: state[old] for new, old in origin.items()}
        own = self.clip.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if layout is not None and layout.encoder_prefix is not None:
            check_declared_layout(Path(path), [origin[k] for k in unexpected], layout)
        if missing:
            raise ClBenchError(
                f"checkpoint {path} does not fit open_clip {self.model_name!r}: {len(missing)} missing key(s), "
                f"e.g. {missing[0]!r}; is it a checkpoint of another architecture?"
            )
        bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            raise ClBenchError(
                f"checkpoint {path}: {bad[0]!r} has shape {tuple(state[bad[0]].shape)}, open_clip "
                f"{self.model_name!r} expects {tuple(own[bad[0]].shape)}"
            )
        self.clip.load_state_dict({k: state[k] for k in own}, strict=True)
        self.clip.eval()
        return {"path": str(path), "sha256": file_sha256(Path(path)), "format": "open_clip",
                "model": self.model_name, "n_loaded": len(own), "dropped": [origin[k] for k in unexpected]}


# the weight files open_clip looks for in a hub folder, best first (open_clip.factory's order)
OPEN_CLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                          "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth", "model.safetensors",
                          "pytorch_model.bin", "pytorch_model.pth", "model.pth")


def open_clip_from_checkpoint(path: Path, params: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """``--checkpoint DIR`` of an open_clip hub folder (open_clip_config.json + weights): the
    architecture comes from the folder (``local-dir:DIR``) unless params name one; else a file."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return params, path
    if not (path / "open_clip_config.json").is_file():
        raise ClBenchError(f"{path} is a directory without open_clip_config.json; pass the weights file "
                           "and the architecture (--arch-param model=ViT-B-32)")
    params.setdefault("model", f"local-dir:{path.resolve()}")
    for name in OPEN_CLIP_WEIGHT_FILES:
        if (path / name).is_file():
            return params, path / name
    raise ClBenchError(f"{path} holds no open_clip weights (looked for {', '.join(OPEN_CLIP_WEIGHT_FILES[:3])} ...)")


@register("arch", "open-clip", params=OpenClipParams)
def build_open_clip(p: OpenClipParams, **_: Any) -> OpenClipEncoder:
    if p.model is None:
        raise ClBenchError("arch open-clip needs an architecture: --arch-param model=ViT-B-32 (see "
                           "open_clip.list_models()), or --checkpoint an open_clip hub folder (open_clip_config.json)")
    return OpenClipEncoder(p.model, p.batch_size)


build_open_clip.from_checkpoint = open_clip_from_checkpoint  # type: ignore[attr-defined]
