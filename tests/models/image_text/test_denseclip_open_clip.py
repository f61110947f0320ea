"""DenseCLIP on released open_clip weights (``denseclip`` with ``tower: open_clip``): a tiny random
ModifiedResNet CLIP built from a custom open_clip config, saved to a local file and loaded through
the real path; the dense map against a hand-written attention pool at every position (and
open_clip's own pool for the global token), the context insertion against open_clip's
``encode_text`` of real words, the frozen text tower after a step, refusals, and a tiny run
through the segmentation protocol with the Semantic FPN head and AdamW."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from cl_bench import components
from cl_bench.errors import ClBenchError
from cl_bench.models.image.dense_trunk import trunk_of
from cl_bench.models.image_text.denseclip_open_clip import OpenClipDenseClip, resize_grid
from cl_bench.protocols.base import RunContext
from cl_bench.protocols.dense.seg_heads import AuxiliaryLogits, build_head
from cl_bench.protocols.segmentation import SegmentationParams, run_segmentation, segmentation_loss

# a ModifiedResNet of width 8 (stage channels 32..256, attention pool 256-d, 4 heads) at 64 px: a 2x2 grid
TINY_RN_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_GUIDE = {"context_length": 4, "decoder_width": 16, "decoder_heads": 2, "decoder_layers": 1,
              "decoder_dropout": 0.0, "input_resolution": 64}


def save_tiny_rn_clip(folder: Path, name: str = "clbench-tiny-rn", seed: int = 0) -> tuple[str, Path]:
    """Register the tiny config with open_clip under ``name`` and save a random model's state dict."""
    import open_clip

    cfg_dir = folder / "open_clip_cfg"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    (cfg_dir / f"{name}.json").write_text(json.dumps(TINY_RN_CLIP))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return name, path


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return save_tiny_rn_clip(tmp_path_factory.mktemp("rn-clip"))


def source_model(released: tuple[str, Path]):
    import open_clip

    name, path = released
    return open_clip.create_model(name, pretrained=str(path)).eval()  # open_clip's own loader of the same file


def build(released: tuple[str, Path], **kw) -> OpenClipDenseClip:
    name, path = released
    torch.manual_seed(3)
    return components.get("arch", "denseclip")({"tower": "open_clip", "model": name, "pretrained": str(path),
                                                **TINY_GUIDE, **kw})


# --------------------------------------------------------------------------------- loading
def test_weights_come_from_the_file(released: tuple[str, Path]) -> None:
    src, m = source_model(released), build(released)
    assert torch.equal(m.stem[0].weight, src.visual.conv1.weight)
    assert torch.equal(m.stages[3][0].conv3.weight, src.visual.layer4[0].conv3.weight)
    assert torch.equal(m.text["token_embedding"].weight, src.token_embedding.weight)
    assert torch.equal(m.attnpool.positional_embedding, src.visual.attnpool.positional_embedding)  # 2x2 kept
    rep = m.checkpoint_report
    assert rep["format"] == "open_clip" and rep["path"] == str(released[1]) and rep["positional_grid"] == [2, 2]


def test_positional_grid_resized_at_load(released: tuple[str, Path]) -> None:
    src, m = source_model(released), build(released, input_resolution=512)
    pos = m.attnpool.positional_embedding
    assert pos.shape == (1 + 16 * 16, 256)
    assert torch.equal(pos[0], src.visual.attnpool.positional_embedding[0])


def test_resize_grid_hand_worked() -> None:
    # a 2x2 grid [[a, b], [c, d]] per channel -> 4x4 bilinear (half-pixel centres): along a row
    # a, 0.75a + 0.25b, 0.25a + 0.75b, b (sample points -0.25, 0.25, 0.75, 1.25, clamped)
    a, b, c, d = 1.0, 5.0, 9.0, 13.0
    pos = torch.tensor([[7.0], [a], [b], [c], [d]])
    out = resize_grid(pos, (4, 4))
    assert out[0, 0] == 7.0
    grid = out[1:, 0].reshape(4, 4)
    assert torch.allclose(grid[0], torch.tensor([a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b]))
    assert torch.allclose(grid[:, 0], torch.tensor([a, 0.75 * a + 0.25 * c, 0.25 * a + 0.75 * c, c]))
    assert torch.allclose(grid[1, 1], torch.tensor(0.75 * (0.75 * a + 0.25 * b) + 0.25 * (0.75 * c + 0.25 * d)))


# ------------------------------------------------------------------------------- dense map
def pool_by_hand(pool, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """CLIP's attention pool at every position (DenseCLIP Sec. 3.2) from the weights: tokens
    [mean; f_1..f_HW] + pos, per-head softmax(q k^T / sqrt(d)) v, heads concatenated, c_proj."""
    b, c, h, w = x.shape
    heads = pool.num_heads
    d = c // heads
    out = torch.zeros(b, pool.c_proj.out_features, 1 + h * w)
    for i in range(b):
        t = torch.cat([x[i].reshape(c, -1).mean(dim=1, keepdim=True), x[i].reshape(c, -1)], dim=1).t() + pos
        q = t @ pool.q_proj.weight.t() + pool.q_proj.bias
        k = t @ pool.k_proj.weight.t() + pool.k_proj.bias
        v = t @ pool.v_proj.weight.t() + pool.v_proj.bias
        per_head = []
        for j in range(heads):
            s = slice(j * d, (j + 1) * d)
            att = torch.softmax(q[:, s] @ k[:, s].t() / d ** 0.5, dim=-1)
            per_head.append(att @ v[:, s])
        out[i] = (torch.cat(per_head, dim=1) @ pool.c_proj.weight.t() + pool.c_proj.bias).t()
    return out


def test_dense_map_is_the_attention_pool_at_every_position(released: tuple[str, Path]) -> None:
    src, m = source_model(released), build(released)
    m.eval()
    torch.manual_seed(1)
    fmap = torch.randn(2, 256, 2, 2)
    glob, dense = m.dense_embeddings(fmap)
    assert glob.shape == (2, 16) and dense.shape == (2, 16, 2, 2)
    want = pool_by_hand(m.attnpool, fmap, m.attnpool.positional_embedding.detach())
    assert torch.allclose(glob, want[:, :, 0], atol=1e-5)
    assert torch.allclose(dense.flatten(2), want[:, :, 1:], atol=1e-5)
    with torch.no_grad():  # the global token is open_clip's own attention pool output
        assert torch.allclose(glob, src.visual.attnpool(fmap), atol=1e-5)


def test_dense_map_on_another_grid_interpolates_the_positions(released: tuple[str, Path]) -> None:
    m = build(released).eval()
    torch.manual_seed(2)
    fmap = torch.randn(1, 256, 3, 5)
    pos = m.attnpool.positional_embedding.detach()
    grid = F.interpolate(pos[1:].t().reshape(1, 256, 2, 2), size=(3, 5), mode="bilinear", align_corners=False)
    want = pool_by_hand(m.attnpool, fmap, torch.cat([pos[:1], grid.reshape(256, 15).t()]))
    glob, dense = m.dense_embeddings(fmap)
    assert torch.allclose(dense.flatten(2), want[:, :, 1:], atol=1e-5) and torch.allclose(glob, want[:, :, 0], atol=1e-5)


def test_image_encoder_is_the_global_embedding(released: tuple[str, Path]) -> None:
    src, m = source_model(released), build(released).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = F.normalize(src.encode_image(m.normalize(x)), dim=-1)
        assert torch.allclose(m(x), want, atol=1e-5)


# --------------------------------------------------------------------------- text + contexts
def test_no_contexts_is_open_clips_encode_text(released: tuple[str, Path]) -> None:
    import open_clip

    src, m = source_model(released), build(released, context_length=0)
    names = ["wall", "chest of drawers", "sky"]
    with torch.no_grad():
        want = src.encode_text(open_clip.get_tokenizer(released[0])(names))
        assert torch.allclose(m.class_text(names), want, atol=1e-5)


def test_contexts_after_sot_shift_the_eot_pooling(released: tuple[str, Path]) -> None:
    """Contexts set to the token embeddings of "a photo of a": [SOT, ctx, "dog", EOT] is the text
    "a photo of a dog", whose EOT sits 4 positions later than in "dog" alone."""
    import open_clip

    src, m = source_model(released), build(released, context_length=4)
    tok = open_clip.get_tokenizer(released[0])
    prefix = tok(["a photo of a"])[0, 1:5]
    with torch.no_grad():
        m.contexts.copy_(src.token_embedding(prefix))
        got = m.class_text(["dog", "tree"])
        want = src.encode_text(tok(["a photo of a dog", "a photo of a tree"]))
    assert torch.allclose(got, want, atol=1e-5)
    ids, eot = m.class_ids(["dog", "chest of drawers"])
    assert eot.tolist() == [2, 4] and ids.shape == (2, 5)


def test_long_name_and_context_limits(released: tuple[str, Path]) -> None:
    m = build(released)
    with pytest.raises(ClBenchError, match="raise text_length"):
        m.class_text(["a very long class name indeed"])
    with pytest.raises(ClBenchError, match="positions"):
        build(released, context_length=64, text_length=20).class_text(["wall"])


def test_one_step_trains_guidance_and_backbone_not_text(released: tuple[str, Path]) -> None:
    m = build(released)
    trunk = trunk_of(m)
    assert trunk.channels == {"stage1": 32, "stage2": 64, "stage3": 128, "stage4": 256}
    assert trunk.strides == {"stage1": 4, "stage2": 8, "stage3": 16, "stage4": 32}
    names = ["wall", "sky", "tree"]
    strides = [trunk.strides[n] for n in trunk.names]
    seg = m.language_guided_segmenter(trunk, names, lambda cins: build_head("fpn", cins, 3, 16, strides=strides,
                                                                             fpn_channels=16))
    assert seg.head.neck.lateral_convs[3].in_channels == 256 + 3  # the score map at the last stage
    seg.train()
    x, y = torch.rand(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    out = seg(x)
    assert isinstance(out, AuxiliaryLogits) and out.logits.shape == (2, 3, 64, 64) and out.aux_logits.shape == (2, 3, 2, 2)
    frozen = {k: v.clone() for k, v in m.text.state_dict().items()}
    frozen_pos, frozen_proj = m.text_positions.clone(), m.text_projection.clone()
    before = {"contexts": m.contexts.detach().clone(), "pool": m.attnpool.c_proj.weight.detach().clone(),
              "stem": m.stem[0].weight.detach().clone()}
    opt = torch.optim.AdamW([p for p in seg.parameters() if p.requires_grad], lr=1e-2)
    segmentation_loss(out, y).backward()
    opt.step()
    assert not torch.equal(m.contexts, before["contexts"]) and not torch.equal(m.attnpool.c_proj.weight, before["pool"])
    assert not torch.equal(m.stem[0].weight, before["stem"])
    assert all(torch.equal(v, m.text.state_dict()[k]) for k, v in frozen.items())
    assert torch.equal(m.text_positions, frozen_pos) and torch.equal(m.text_projection, frozen_proj)
    assert not m.text.training
    assert {id(p) for p in m.attnpool.parameters()} <= {id(p) for p in seg.backbone_parameters()}


# ------------------------------------------------------------------------------------ refusals
def test_refusals(released: tuple[str, Path], tmp_path: Path) -> None:
    import open_clip

    from tests.models.image_text.test_image_text_adapters import TINY_OPEN_CLIP

    build_arch = components.get("arch", "denseclip")
    with pytest.raises(ClBenchError, match="needs the released CLIP weights: --checkpoint"):
        build_arch({"tower": "open_clip", "model": released[0]})
    with pytest.raises(ClBenchError, match="does not exist"):
        build_arch({"tower": "open_clip", "model": released[0], "pretrained": str(tmp_path / "none.safetensors")})
    cfg_dir = tmp_path / "vit_cfg"
    cfg_dir.mkdir()
    (cfg_dir / "clbench-dc-tiny-vit.json").write_text(json.dumps(TINY_OPEN_CLIP))
    open_clip.add_model_config(cfg_dir)
    vit = open_clip.create_model("clbench-dc-tiny-vit", pretrained=None)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    with pytest.raises(ClBenchError, match="VisionTransformer image tower; DenseCLIP here needs a ModifiedResNet"):
        build_arch({"tower": "open_clip", "model": "clbench-dc-tiny-vit", "pretrained": str(path)})
    with pytest.raises(ClBenchError, match="does not fit open_clip"):  # another architecture's file
        build_arch({"tower": "open_clip", "model": released[0], "pretrained": str(path)})


def test_checkpoint_flag_becomes_pretrained(released: tuple[str, Path]) -> None:
    hook = components.get("arch", "denseclip").from_checkpoint
    params, weights = hook(released[1], {"tower": "open_clip", "model": "RN50"})
    assert weights is None and params["pretrained"] == str(released[1])
    assert hook(released[1], {"towers": "clip"}) == ({"towers": "clip"}, released[1])  # scene towers: loaded after


# ------------------------------------------------------------------------------ the protocol
def test_tiny_run_with_fpn_and_adamw(released: tuple[str, Path]) -> None:
    data = components.get("dataset", "scenes-cityscapes")({"n_train": 4, "n_test": 2, "image_size": 64, "seed": 1}, None)
    params = SegmentationParams(head="fpn", output_stride=32, optimizer="adamw", lr=1e-3, weight_decay=1e-4,
                                backbone_lr_mult=0.1, iterations=2, batch_size=2, crop_size=(64, 64),
                                scale_range=(1.0, 1.0), head_channels=8, fpn_channels=8, warmup_iters=1,
                                warmup_ratio=1e-6)
    ctx = RunContext(torch.device("cpu"), 0, lambda m, s: np.zeros((0, 1)))
    m = build(released)
    a = run_segmentation(m, data, params, ctx)
    b = run_segmentation(m, data, params, ctx)
    assert a.metrics == b.metrics and 0 <= a.metrics["mIoU"] <= 100
    assert a.extras["head"] == "fpn" and a.extras["output_stride"] == 32 and a.extras["dilated_stages"] == []
    assert a.extras["language_guidance"]["class_names"] == data.prompt_names
    assert all(np.isfinite(a.extras["train"]["loss_curve"]))


def test_fcn_task_dilates_the_clip_resnet(released: tuple[str, Path]) -> None:
    from cl_bench.models.image.dense_trunk import dilate_to_output_stride

    trunk = trunk_of(build(released))
    assert dilate_to_output_stride(trunk, 8) == ["stage3", "stage4"]
    assert trunk.strides["stage4"] == 8
