"""A Hugging Face ``AutoModelForCausalLM`` behind the ``CausalLM`` interface.

Scoring is batched and padding-aware: the prefix every request shares (e.g. TruthfulQA's fixed
6-shot preamble) is encoded once and its key/value cache is reused by every batch; each batch
holds the rest of the contexts plus the continuations, right-padded (with causal attention,
padding on the right is never attended to by real tokens, so no mask is needed).

Early layers are read out DoLa-style: the final normalisation and the LM head are applied to the
hidden state after block ``j`` (layer ``0`` is the embedding output, layer ``n_layer`` the model's
own final output), for layer-contrast scoring.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.models.interfaces.causal_lm import CausalLM, TokenPair
from cl_bench.specs import Strict, validate_params

_FINAL_NORM_NAMES = ("ln_f", "norm", "final_layer_norm", "final_layernorm")


class HFCausalLM(CausalLM):
    """Wraps ``hf_model`` (an ``AutoModelForCausalLM``) and its tokenizer."""

    def __init__(self, hf_model: Any, tokenizer: Any, batch_size: int = 32) -> None:
        super().__init__()
        self.batch_size = batch_size
        self._set(hf_model, tokenizer)

    def _set(self, hf_model: Any, tokenizer: Any) -> None:
        self.hf = hf_model
        self.tokenizer = tokenizer
        cfg = hf_model.config
        self.n_layer = int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layer)
        eot = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else cfg.eos_token_id
        if eot is None:
            raise ClBenchError("the tokenizer defines no end-of-text token (eos_token); set one in its config")
        self.eot_token_id = int(eot)
        self.max_length = _max_length(cfg, tokenizer)
        self._cache_kw = "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"
        self._prefix_memo: tuple[tuple[int, ...], Any] | None = None

    # --- checkpoints -----------------------------------------------------------------------------
    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """Load an HF directory (``config.json`` + weights + tokenizer files); a file inside it also works."""
        folder = Path(path)
        folder = folder if folder.is_dir() else folder.parent
        model, tok = load_hf_directory(folder)
        self._set(model, tok)
        return {"path": str(folder), "format": "huggingface", "model_class": type(model).__name__}

    # --- forward passes --------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, cache: Any, hidden: bool) -> Any:
        kwargs = {self._cache_kw: cache} if cache is not None else {}
        return self.hf(input_ids=ids, use_cache=cache is not None, output_hidden_states=hidden, **kwargs)

    def _prefix_cache(self, prefix: list[int]) -> Any:
        key = tuple(prefix)
        if self._prefix_memo is None or self._prefix_memo[0] != key:
            ids = torch.tensor([prefix], dtype=torch.long, device=self._device())
            kwargs = {self._cache_kw: None}
            out = self.hf(input_ids=ids, use_cache=True, **kwargs)
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            self._prefix_memo = (key, cache)
        return self._prefix_memo[1]

    def _device(self) -> torch.device:
        return next(self.hf.parameters()).device

    def final_norm(self) -> torch.nn.Module:
        base = getattr(self.hf, "base_model", self.hf)
        for name in _FINAL_NORM_NAMES:
            mod = getattr(base, name, None)
            if isinstance(mod, torch.nn.Module):
                return mod
        raise ClBenchError(f"{type(self.hf).__name__}: no final norm found, so early layers cannot be read out")

    def _readout(self, out: Any, layer: int, rows: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Log-probabilities at the (batch, position) ``rows`` read out at ``layer``."""
        if layer == self.n_layer:
            logits = out.logits[rows]
        else:
            hidden = out.hidden_states[layer][rows]
            logits = self.hf.get_output_embeddings()(self.final_norm()(hidden))
        return F.log_softmax(logits.float(), dim=-1)

    def _check_layers(self, layers: list[int]) -> None:
        for layer in layers:
            if not 0 <= layer <= self.n_layer:
                raise ClBenchError(f"layer {layer} does not exist: this model has layers 0..{self.n_layer}")

    @torch.no_grad()
    def layer_logprobs(
        self, pairs: list[TokenPair], layers: list[int], shared_prefix: list[int]
    ) -> list[dict[int, torch.Tensor]]:
        """For each pair, ``{layer: log-probs [len(continuation), vocab]}`` at each requested layer."""
        self._check_layers(layers)
        self.hf.eval()
        device = self._device()
        p = len(shared_prefix)
        prefix_cache = self._prefix_cache(shared_prefix) if p else None
        hidden = any(layer != self.n_layer for layer in layers)
        results: list[dict[int, torch.Tensor]] = []
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            inputs = [(ctx + cont)[:-1][p:] for ctx, cont in batch]
            width = max(len(x) for x in inputs)
            ids = torch.full((len(batch), width), self.eot_token_id, dtype=torch.long)
            for i, x in enumerate(inputs):
                ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            cache = None
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
            out = self._forward(ids.to(device), cache, hidden)
            b_idx = torch.cat([torch.full((len(c),), i, dtype=torch.long) for i, (_, c) in enumerate(batch)])
            t_idx = torch.cat([torch.arange(len(c)) + len(ctx) - p - 1 for ctx, c in batch])
            rows = (b_idx.to(device), t_idx.to(device))
            per_layer = {layer: self._readout(out, layer, rows).cpu() for layer in layers}
            offsets = [0]
            for _, c in batch:
                offsets.append(offsets[-1] + len(c))
            for i in range(len(batch)):
                results.append({layer: lp[offsets[i] : offsets[i + 1]] for layer, lp in per_layer.items()})
        return results

    def token_scores(self, pairs: list[TokenPair], shared_prefix: list[int]) -> list[torch.Tensor]:
        return [d[self.n_layer] for d in self.layer_logprobs(pairs, [self.n_layer], shared_prefix)]

    def loglikelihood_tokens(self, pairs: list[TokenPair]) -> list[tuple[float, bool]]:
        self._prefix_memo = None  # weights may have changed since the last call
        try:
            return super().loglikelihood_tokens(pairs)
        finally:
            self._prefix_memo = None

    @torch.no_grad()
    def next_layer_logprobs(self, sequences: list[list[int]], layers: list[int]) -> dict[int, torch.Tensor]:
        """``{layer: log-probs [B, vocab]}`` of the token after each sequence."""
        self._check_layers(layers)
        self.hf.eval()
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.eot_token_id, dtype=torch.long)
        for i, s in enumerate(sequences):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        device = self._device()
        out = self._forward(ids.to(device), None, any(layer != self.n_layer for layer in layers))
        rows = (torch.arange(len(sequences), device=device), torch.tensor([len(s) - 1 for s in sequences], device=device))
        return {layer: self._readout(out, layer, rows).cpu() for layer in layers}

    def next_token_scores(self, sequences: list[list[int]]) -> torch.Tensor:
        return self.next_layer_logprobs(sequences, [self.n_layer])[self.n_layer]

    def save_pretrained(self, folder: Path) -> None:
        """Write an HF directory (model + tokenizer) that ``AutoModelForCausalLM`` can load."""
        self.hf.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))


def _max_length(cfg: Any, tokenizer: Any) -> int:
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value:
            return int(value)
    value = getattr(tokenizer, "model_max_length", None)
    return int(value) if value and value < 1_000_000 else 2048


def load_hf_directory(folder: Path) -> tuple[Any, Any]:
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from a local directory, offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise ClBenchError(f"{folder} is not a Hugging Face model directory (no config.json)")
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ClBenchError(f"cannot load a causal LM from {folder}: {str(e).splitlines()[0]}") from None
    return model.eval(), tok


class HFCausalLMParams(Strict):
    path: str | None = None  # a local Hugging Face model directory (or --checkpoint DIR)
    batch_size: int = Field(default=32, ge=1)


@register("arch", "hf-causal-lm")
def build_hf_causal_lm(params: dict[str, Any], **_: Any) -> HFCausalLM:
    p = validate_params(HFCausalLMParams, params, "arch hf-causal-lm params")
    if p.path is None:
        raise ClBenchError("arch hf-causal-lm needs a model: --checkpoint DIR (a local Hugging Face model folder) "
                           "or params.path")
    folder = Path(p.path).expanduser()
    if not folder.is_dir():
        raise ClBenchError(f"arch hf-causal-lm: {folder} is not a directory; point params.path at an HF model folder")
    model, tok = load_hf_directory(folder)
    lm = HFCausalLM(model, tok, batch_size=p.batch_size)
    lm.checkpoint_report = {"path": str(folder), "format": "huggingface", "model_class": type(model).__name__}
    return lm


def directory_as_path(path: Path, params: dict[str, Any]) -> tuple[dict[str, Any], None]:
    """``--checkpoint DIR`` of an arch that loads a model folder at build time: DIR becomes its ``path``
    (a file inside the folder names the folder); the builder reads the weights itself."""
    path = Path(path).expanduser()
    params["path"] = str(path.parent if path.is_file() else path)
    return params, None


build_hf_causal_lm.from_checkpoint = directory_as_path  # type: ignore[attr-defined]
