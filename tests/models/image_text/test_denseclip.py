"""DenseCLIP (arXiv 2112.01518): the score map, the context decoder and the text prompting against
explicit rewrites of the paper's equations on small tensors, the auxiliary loss against a
hand-worked value, params rejection, and a tiny fine-tuning step / run through the protocol."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cl_bench import components
from cl_bench.cache import Cache
from cl_bench.errors import ClBenchError
from cl_bench.models.image.dense_trunk import trunk_of
from cl_bench.models.image_text.context_decoder import Attention, ContextDecoder, pixel_text_score_map
from cl_bench.models.image_text.denseclip import DenseClip, DenseClipParams
from cl_bench.models.image_text.scene_clip import SceneClip, SceneClipParams
from cl_bench.obtain import MemberSource
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.dense.seg_heads import AuxiliaryLogits, build_head
from cl_bench.protocols.segmentation import SegmentationParams, run_segmentation, segmentation_loss

TINY_CLIP = SceneClipParams(embed_dim=8, image_width=4, text_width=16, text_layers=1, text_heads=2)
TINY_DC = DenseClipParams(context_length=3, decoder_width=8, decoder_heads=2, decoder_layers=2, decoder_dropout=0.0)


def tiny_denseclip(seed: int = 0, **kw) -> DenseClip:
    torch.manual_seed(seed)
    return DenseClip(SceneClip(TINY_CLIP, (32, 32)), TINY_DC.model_copy(update=kw))


# ------------------------------------------------------------------------------------ score map
def test_score_map_hand_worked() -> None:
    # two positions: z = (3, 4) -> (0.6, 0.8) and (2, 0) -> (1, 0); classes t = (1, 0) and (0, 5) -> (0, 1)
    visual = torch.tensor([[[[3.0, 2.0]], [[4.0, 0.0]]]])  # [1, C=2, H=1, W=2]
    text = torch.tensor([[[1.0, 0.0], [0.0, 5.0]]])  # [1, K=2, C=2]
    s = pixel_text_score_map(visual, text)
    assert s.shape == (1, 2, 1, 2)
    assert torch.allclose(s[0, :, 0, 0], torch.tensor([0.6, 0.8]))
    assert torch.allclose(s[0, :, 0, 1], torch.tensor([1.0, 0.0]))


def test_score_map_per_image_text() -> None:
    torch.manual_seed(1)
    v, t = torch.randn(2, 5, 3, 4), torch.randn(2, 6, 5)
    s = pixel_text_score_map(v, t)
    for b in range(2):
        for k in range(6):
            for i in range(3):
                for j in range(4):
                    want = F.cosine_similarity(v[b, :, i, j], t[b, k], dim=0)
                    assert math.isclose(float(s[b, k, i, j]), float(want), abs_tol=1e-5)


# ------------------------------------------------------------------------------ context decoder
def attention_by_hand(att: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q_h K_h^T / sqrt(d_h)) V_h per head, heads concatenated, then W_o x + b_o (no dropout)."""
    h = att.heads
    d = q.shape[-1] // h
    Q, K, V = q @ att.q_proj.weight.T, k @ att.k_proj.weight.T, v @ att.v_proj.weight.T
    heads = []
    for i in range(h):
        sl = slice(i * d, (i + 1) * d)
        a = torch.softmax(Q[..., sl] @ K[..., sl].transpose(-2, -1) / math.sqrt(d), dim=-1)
        heads.append(a @ V[..., sl])
    return torch.cat(heads, dim=-1) @ att.proj.weight.T + att.proj.bias


def ln(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def lin(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def decoder_by_hand(dec: ContextDecoder, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """Eq. 6-7: memory = LN(W_m LN(v)), x = W_t LN(t); per layer x += SA(LN1 x); x += CA(LN2 x, memory);
    x += MLP(LN3 x) with MLP = W_2 GELU(W_1 .); out = W_o LN(x)."""
    memory = ln(lin(ln(visual, dec.memory_proj[0]), dec.memory_proj[1]), dec.memory_proj[2])
    x = lin(ln(text, dec.text_proj[0]), dec.text_proj[1])
    for layer in dec.decoder:
        q = ln(x, layer.norm1)
        x = x + attention_by_hand(layer.self_attn, q, q, q)
        x = x + attention_by_hand(layer.cross_attn, ln(x, layer.norm2), memory, memory)
        hidden = lin(ln(x, layer.norm3), layer.mlp[0])
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact GELU
        x = x + lin(hidden, layer.mlp[3])
    return lin(ln(x, dec.out_proj[0]), dec.out_proj[1])


def test_context_decoder_matches_the_equations() -> None:
    torch.manual_seed(2)
    dec = ContextDecoder(visual_dim=6, width=8, heads=2, layers=2, dropout=0.1).eval()
    for p in dec.parameters():  # LayerNorm starts at (1, 0): perturb so every term is exercised
        p.data.add_(0.05 * torch.randn_like(p))
    text, visual = torch.randn(3, 4, 6), torch.randn(3, 7, 6)
    assert torch.allclose(dec(text, visual), decoder_by_hand(dec, text, visual), atol=1e-5)


def test_decoder_init_and_gamma_residual() -> None:
    torch.manual_seed(3)
    dec = ContextDecoder(visual_dim=16, width=8, heads=2, layers=1)
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in dec.modules()
               if isinstance(m, torch.nn.Linear) and m.bias is not None)
    m = tiny_denseclip(gamma_init=1e-4).eval()
    assert torch.equal(m.gamma.detach(), torch.full((8,), 1e-4))
    fmap = torch.randn(2, m.visual.embed_dim, 3, 3)
    names = ["circle", "square", "road"]
    score, text = m.guide(fmap, names)
    # by hand: t + gamma * decoder(t, [z_global; z]); s = cos(z, t)
    dense = fmap.flatten(2).transpose(1, 2) @ m.image_projection.weight.T
    glob = fmap.mean(dim=(2, 3)) @ m.image_projection.weight.T
    t0 = m.class_text(names).expand(2, -1, -1)
    want = t0 + m.gamma * decoder_by_hand(m.context_decoder, t0, torch.cat([glob[:, None], dense], dim=1))
    assert torch.allclose(text, want, atol=1e-5)
    z = F.normalize(dense, dim=-1)
    s = torch.einsum("bnc,bkc->bkn", z, F.normalize(want, dim=-1)).reshape(2, 3, 3, 3)
    assert torch.allclose(score, s, atol=1e-5)


# --------------------------------------------------------------------------------- text prompting
def test_no_contexts_is_the_text_towers_own_embedding() -> None:
    names = ["circle", "a red square", "trees"]
    torch.manual_seed(0)
    sc = SceneClip(TINY_CLIP, (32, 32)).eval()
    m2 = DenseClip(sc, TINY_DC.model_copy(update={"context_length": 0})).eval()
    assert torch.allclose(m2.class_text(names), sc.text_features(names)[0], atol=1e-6)


def test_contexts_come_first_and_enter_the_mean() -> None:
    """[p_1..p_M, w_k] through the tower, mean over all M + L tokens, then the projection: rewritten
    with the tower's layers applied to an explicitly built sequence."""
    m = tiny_denseclip(context_length=3).eval()
    ids, _ = m.tokenizer(["circle"])
    x = torch.cat([m.contexts, m.text.token_embedding(ids[0])], dim=0)[None] + m.text.position_embedding[:4]
    tokens = m.text.ln_final(m.text.layers(x))
    want = m.text_projection(tokens.mean(dim=1))
    assert torch.allclose(m.class_text(["circle"]), want, atol=1e-6)


def test_minilm_towers_prompt_through_minilm_and_pool_as_trained() -> None:
    """Towers with the frozen MiniLM text tower and a max-pooled image tower (the scene recipe):
    contexts live in MiniLM's 384-d word space, the class text is the tower's with_contexts, and
    the global visual embedding is the towers' own max pooling, not a mean."""
    from cl_bench.models.image_text.frozen_sentence_tower import SENTENCE_DIM

    torch.manual_seed(0)
    sc = SceneClip(SceneClipParams(embed_dim=8, image_width=4, text_width=16, text_tower="minilm",
                                   image_tower="convnet", image_blocks=[1, 1], image_pool="max"), (32, 32)).eval()
    m = DenseClip(sc, TINY_DC).eval()
    assert m.contexts.shape == (3, SENTENCE_DIM)
    names = ["circle", "trees"]
    torch.testing.assert_close(m.class_text(names), sc.text_projection(sc.text.with_contexts(m.contexts, names)))
    fmap = torch.randn(2, sc.visual.embed_dim, 4, 4)
    glob, dense = m.dense_embeddings(fmap)
    torch.testing.assert_close(glob, sc.image_projection(fmap.amax(dim=(2, 3))))
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(m(x), sc.embed_images(x))


def test_text_tower_frozen_and_kept_in_eval() -> None:
    m = tiny_denseclip().train()
    assert not m.text.training and not any(p.requires_grad for p in m.text.parameters())
    assert not m.text_projection.weight.requires_grad
    assert m.contexts.requires_grad and m.gamma.requires_grad and m.visual.training


# --------------------------------------------------------------------------------------- the loss
def test_auxiliary_loss_hand_worked() -> None:
    # main logits: 2 classes on a 1x2 image; aux: a 1x1 score map (constant after upsampling)
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # pixel 0 favours class 0, pixel 1 uniform
    aux = torch.tensor([[[[0.5]], [[-0.5]]]]) / 0.07  # s / tau
    y = torch.tensor([[[0, 1]]])
    main = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(0.5)) / 2
    p0 = math.exp(0.5 / 0.07) / (math.exp(0.5 / 0.07) + math.exp(-0.5 / 0.07))
    aux_ce = (-math.log(p0) - math.log(1 - p0)) / 2
    got = segmentation_loss(AuxiliaryLogits(logits, aux, 0.4), y)
    assert math.isclose(float(got), main + 0.4 * aux_ce, rel_tol=1e-5)
    assert math.isclose(float(segmentation_loss(logits, y)), main, rel_tol=1e-6)


def test_auxiliary_loss_ignores_255() -> None:
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    aux = torch.zeros(1, 3, 1, 1, requires_grad=True)
    y = torch.full((1, 2, 2), 255)
    loss = segmentation_loss(AuxiliaryLogits(logits, aux, 0.4), y)
    loss.backward()
    assert float(loss.detach()) == 0.0 and aux.grad is not None


# ------------------------------------------------------------------------------- params rejection
def test_params_rejected() -> None:
    build = components.get("arch", "denseclip")
    with pytest.raises(ClBenchError, match="arch 'denseclip' params"):
        build({"towers": "clip", "contexts": 4})
    with pytest.raises(ClBenchError):
        build({"tau": 0})
    with pytest.raises(ClBenchError, match="divisible"):
        tiny_denseclip(decoder_width=10, decoder_heads=4)
    with pytest.raises(ClBenchError, match="positions"):
        tiny_denseclip(context_length=40).class_text(["circle"])


def test_towers_must_be_image_text(tmp_path: Path) -> None:
    members = MemberSource(Cache(tmp_path / "cache"))
    with pytest.raises(ClBenchError, match="does not provide image_text"):
        components.get("arch", "denseclip")({"towers": "random"}, members=members)
    with pytest.raises(ClBenchError, match="does not provide image_text"):
        components.get("arch", "clip-image-tower")({"towers": "simclr"}, members=members)


# --------------------------------------------------------------------------- fine-tuning (tiny)
def test_one_fine_tuning_step_trains_guidance_not_text() -> None:
    m = tiny_denseclip(seed=4)
    trunk = trunk_of(m)
    names = ["circle", "square", "road", "trees"]
    seg = m.language_guided_segmenter(trunk, names, lambda cins: build_head("fcn", cins, 4, 8))
    seg.train()
    x, y = torch.rand(2, 3, 32, 32), torch.randint(0, 4, (2, 32, 32))
    out = seg(x)
    assert isinstance(out, AuxiliaryLogits) and out.logits.shape == (2, 4, 32, 32)
    assert out.aux_logits.shape[1] == 4 and out.weight == 0.4
    text_before = m.text.token_embedding.weight.clone()
    ctx_before, gamma_before = m.contexts.detach().clone(), m.gamma.detach().clone()
    opt = torch.optim.SGD([p for p in seg.parameters() if p.requires_grad], lr=0.1)
    segmentation_loss(out, y).backward()
    assert m.contexts.grad is not None and m.gamma.grad is not None
    assert all(p.grad is not None for p in m.context_decoder.parameters())
    opt.step()
    assert not torch.equal(m.contexts, ctx_before) and not torch.equal(m.gamma, gamma_before)
    assert torch.equal(m.text.token_embedding.weight, text_before)
    seg.eval()
    assert seg(x).shape == (2, 4, 32, 32)  # eval: plain logits


def test_tiny_run_through_the_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLBENCH_CACHE", str(tmp_path))
    data = components.get("dataset", "scenes-cityscapes")({"n_train": 4, "n_test": 2, "image_size": 32, "seed": 1}, None)
    assert data.prompt_names[data.class_names.index("car")] == "circle"
    assert data.prompt_names[data.class_names.index("vegetation")] == "trees"
    params = SegmentationParams(iterations=2, batch_size=2, crop_size=(32, 32), scale_range=(1.0, 1.0), head_channels=8)
    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: np.zeros((0, 1)))
    m = tiny_denseclip(seed=5)
    a = run_segmentation(m, data, params, ctx)
    b = run_segmentation(m, data, params, ctx)
    assert a.metrics == b.metrics and 0 <= a.metrics["mIoU"] <= 100
    card = a.extras["language_guidance"]
    assert card["class_names"] == data.prompt_names and card["contexts"] == 3 and card["tau"] == 0.07
    assert a.extras["train"]["iterations"] == 2 and all(np.isfinite(a.extras["train"]["loss_curve"]))
