"""DenseCLIP on released CLIP weights (``denseclip`` with ``tower: open_clip``): the towers of an
open_clip CLIP with a ModifiedResNet image tower (RN50, RN101, RN50x4 ...), loaded from a local
file through the project's open_clip adapter
(:class:`~cl_bench.models.image_text.open_clip_adapter.OpenClipEncoder`: ``open_clip``'s own model
built offline, the file read safely and loaded strictly), reshaped the way the authors'
``CLIPResNetWithAttention`` and ``CLIPTextContextEncoder`` do (raoyongming/DenseCLIP
``segmentation/denseclip/models.py``, read, not copied):

- image: ``normalize`` (the model's CLIP mean/std) -> the ResNet stem -> ``layer1..layer4`` (the
  four stage maps the Semantic FPN reads), then the attention pool applied at every position
  (:func:`dense_attention_pool`): the tokens ``[mean(f); f_1..f_HW]`` plus the positional
  embedding (its class entry, and its spatial grid resized bilinearly to the feature grid)
  go through the pool's multi-head self-attention (every token a query; q/k/v projections,
  ``c_proj`` as the output projection): token 0 is the global embedding, the others the dense
  embedding map ``z`` [B, D, H, W]. As the authors, the stored grid (7x7 for 224 px) is resized
  once to ``input_resolution / 32`` (16x16 for 512 px crops) when the weights are loaded, then to
  the feature grid at every forward (a no-op for 512 px inputs). The pool is part of the backbone
  (its lr multiplier).
- text (frozen, eval): the class names tokenised by open_clip's BPE tokenizer into
  ``text_length`` tokens (``[SOT] name [EOT]`` + padding; the authors' 5), the ``M`` learnable
  contexts inserted after SOT: ``[SOT, p_1..p_M, name, EOT, pad]``, the first ``text_length + M``
  positional embeddings, the causal mask of that length, ``ln_final``, and the EOT token's output
  (its index in the ids + ``M``) projected by ``text_projection``.

Non-ResNet image towers (ViT) are refused with a one-line error: DenseCLIP's ViT variant is not built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import Normalize

from cl_bench.errors import ClBenchError
from cl_bench.models.image_text.language_guidance import DenseClipParams, LanguageGuidance
from cl_bench.models.image_text.open_clip_adapter import OpenClipEncoder


def resize_grid(pos: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The positional embedding [1 + g*g, C] with its g x g spatial part resized (bilinear) to ``size``."""
    g = round((pos.shape[0] - 1) ** 0.5)
    if g * g != pos.shape[0] - 1:
        raise ClBenchError(f"arch denseclip: the attention pool's positional embedding has {pos.shape[0] - 1} "
                           "spatial entries, not a square grid")
    if (g, g) == tuple(size):
        return pos
    grid = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)
    return torch.cat([pos[:1], grid.reshape(pos.shape[1], -1).t()], dim=0)


def dense_attention_pool(pool: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """open_clip's ``AttentionPool2d`` applied at every position of ``x`` [B, C, H, W] -> (global
    [B, D], dense [B, D, H, W]) (see the module doc)."""
    b, c, h, w = x.shape
    tokens = x.flatten(2).permute(2, 0, 1)  # [HW, B, C]
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
    tokens = tokens + resize_grid(pool.positional_embedding, (h, w))[:, None].to(tokens.dtype)
    out, _ = F.multi_head_attention_forward(
        query=tokens, key=tokens, value=tokens, embed_dim_to_check=c, num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None, in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0, out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias, use_separate_proj_weight=True, training=False, need_weights=False)
    out = out.permute(1, 2, 0)  # [B, D, 1 + HW]
    return out[:, :, 0], out[:, :, 1:].reshape(b, -1, h, w)


class OpenClipDenseClip(LanguageGuidance):
    """A released open_clip ModifiedResNet CLIP + DenseCLIP's language guidance (module doc)."""

    def __init__(self, encoder: OpenClipEncoder, p: DenseClipParams) -> None:
        from open_clip.modified_resnet import ModifiedResNet

        clip = encoder.clip
        visual = clip.visual
        if not isinstance(visual, ModifiedResNet):
            raise ClBenchError(f"arch denseclip: open_clip model {encoder.model_name!r} has a {type(visual).__name__} "
                               "image tower; DenseCLIP here needs a ModifiedResNet one (RN50, RN101, RN50x4 ...)")
        if not hasattr(clip, "token_embedding"):
            raise ClBenchError(f"arch denseclip: open_clip model {encoder.model_name!r} has no built-in CLIP text "
                               "transformer (token_embedding / positional_embedding / transformer)")
        super().__init__(p, encoder.embed_dim, clip.token_embedding.embedding_dim)
        self.model_name = encoder.model_name
        self.normalize = Normalize(encoder.mean, encoder.std)
        self.stem = nn.Sequential(visual.conv1, visual.bn1, visual.act1, visual.conv2, visual.bn2, visual.act2,
                                  visual.conv3, visual.bn3, visual.act3, visual.avgpool)
        self.stages = nn.ModuleList([visual.layer1, visual.layer2, visual.layer3, visual.layer4])
        self.attnpool = visual.attnpool
        self.text = nn.ModuleDict({"token_embedding": clip.token_embedding, "transformer": clip.transformer,
                                   "ln_final": clip.ln_final})
        self.text_positions = clip.positional_embedding  # frozen Parameters, shared with the released model
        self.text_projection = clip.text_projection
        self.register_buffer("causal_mask", clip.attn_mask.detach().clone(), persistent=False)
        for q in [*self.text.parameters(), self.text_positions, self.text_projection]:
            q.requires_grad_(False)
        self.tokenizer = encoder.tokenizer
        self.text_length = p.text_length
        self.grid = p.input_resolution // 32
        self.checkpoint_report: dict[str, Any] = {}

    def load_released(self, encoder: OpenClipEncoder, path: Path) -> dict[str, Any]:
        """The released weights into the shared modules (the adapter's strict loader), then the pool's
        positional grid resized to ``input_resolution / 32`` as the authors' ``init_weights``."""
        report = encoder.load_checkpoint(path)
        with torch.no_grad():
            pos = resize_grid(self.attnpool.positional_embedding.detach(), (self.grid, self.grid))
        self.attnpool.positional_embedding = nn.Parameter(pos.clone())
        self.checkpoint_report = {**report, "positional_grid": [self.grid, self.grid]}
        return self.checkpoint_report

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The global embedding (L2-normalised), as an image encoder."""
        x = self.stem(self.normalize(images))
        for stage in self.stages:
            x = stage(x)
        return F.normalize(self.dense_embeddings(x)[0], dim=-1)

    def dense_embeddings(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return dense_attention_pool(self.attnpool, fmap)

    def image_head(self) -> nn.Module:
        return self.attnpool

    def class_ids(self, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(BPE ids [K, text_length], EOT index [K]) of the class names."""
        ids = self.tokenizer(list(names))
        eot = ids.argmax(dim=-1)  # EOT has the largest id of the vocabulary (CLIP's pooling rule)
        too_long = [n for n, e in zip(names, eot.tolist(), strict=True) if e >= self.text_length]
        if too_long:
            raise ClBenchError(f"arch denseclip: class name {too_long[0]!r} needs more than {self.text_length} BPE "
                               "tokens with SOT and EOT; raise text_length")
        return ids[:, : self.text_length], eot

    def class_text(self, names: list[str]) -> torch.Tensor:
        ids, eot = self.class_ids(names)
        device = self.contexts.device
        ids, eot = ids.to(device), eot.to(device)
        k, m = ids.shape[0], self.contexts.shape[0]
        n = ids.shape[1] + m
        if n > self.text_positions.shape[0]:
            raise ClBenchError(f"arch denseclip: {m} contexts + {ids.shape[1]} name tokens exceed the text tower's "
                               f"{self.text_positions.shape[0]} positions; lower context_length")
        words = self.text["token_embedding"](ids)
        x = torch.cat([words[:, :1], self.contexts.expand(k, m, -1), words[:, 1:]], dim=1) + self.text_positions[:n]
        x = self.text["transformer"](x, attn_mask=self.causal_mask[:n, :n])
        x = self.text["ln_final"](x)
        pooled = x[torch.arange(k, device=device), eot + m]
        proj = self.text_projection
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj


def build_open_clip_denseclip(p: DenseClipParams) -> OpenClipDenseClip:
    """The released towers + guidance, the weights read from ``p.pretrained``."""
    if p.pretrained is None:
        raise ClBenchError(f"arch denseclip (tower open_clip, model {p.model}) needs the released CLIP weights: "
                           "--checkpoint FILE (an open_clip state dict, e.g. open_clip_model.safetensors of "
                           "timm/resnet50_clip.openai for RN50)")
    path = Path(p.pretrained).expanduser()
    if not path.is_file():
        raise ClBenchError(f"arch denseclip: the CLIP weights file {path} does not exist; pass the released "
                           f"{p.model} weights with --checkpoint FILE")
    encoder = OpenClipEncoder(p.model)
    model = OpenClipDenseClip(encoder, p)
    model.load_released(encoder, path)
    return model
