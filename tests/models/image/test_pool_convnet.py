"""PoolConvNet (max-pool downsampling) and CLIP's attention pooling."""

from __future__ import annotations

import math

import pytest
import torch

from cl_bench.errors import ClBenchError

from cl_bench.models.image.dense_trunk import trunk_of
from cl_bench.models.image.pool_convnet import AttentionPool2d, PoolConvNet


def _net() -> PoolConvNet:
    torch.manual_seed(0)
    return PoolConvNet(3, width=4, blocks=[1, 2], mean=(0.5,) * 3, std=(0.25,) * 3)


def test_stages_halve_by_max_pooling_and_double_the_width() -> None:
    net = _net().eval()
    maps = net.feature_maps(torch.rand(2, 3, 20, 18))
    assert {k: tuple(v.shape) for k, v in maps.items()} == {
        "stem": (2, 4, 20, 18), "stage1": (2, 8, 10, 9), "stage2": (2, 16, 5, 4)}
    assert net.embed_dim == 16
    # the downsampling is a max over 2x2 windows of the previous map (not a strided convolution)
    pool = net.stages[0][0]
    assert isinstance(pool, torch.nn.MaxPool2d) and pool.kernel_size == 2
    x = maps["stem"]
    ref = torch.stack([x[..., i::2, j::2][..., :10, :9] for i in (0, 1) for j in (0, 1)]).amax(0)
    torch.testing.assert_close(pool(x), ref)


def test_dense_protocols_take_it_as_a_trunk() -> None:
    trunk = trunk_of(_net())
    assert trunk.channels == {"stage1": 8, "stage2": 16}
    assert trunk.strides == {"stage1": 2, "stage2": 4}


def _clip_attnpool_by_hand(pool: AttentionPool2d, fmap: torch.Tensor) -> torch.Tensor:
    """CLIP's AttentionPool2d (openai/CLIP model.py) written out: tokens = [mean; positions] + pos,
    one query (the mean token), softmax(q k^T / sqrt(d_head)) v per head, then the output projection."""
    att = pool.attention
    c, heads = fmap.shape[1], att.num_heads
    d = c // heads
    x = fmap.flatten(2).transpose(1, 2)
    x = torch.cat([x.mean(1, keepdim=True), x], 1) + pool.positional_embedding
    wq, wk, wv = att.in_proj_weight.split(c)
    bq, bk, bv = att.in_proj_bias.split(c)
    q = (x[:, :1] @ wq.T + bq).view(len(x), 1, heads, d)
    k = (x @ wk.T + bk).view(len(x), -1, heads, d)
    v = (x @ wv.T + bv).view(len(x), -1, heads, d)
    out = torch.zeros(len(x), c)
    for h in range(heads):
        w = torch.softmax(q[:, :, h] @ k[:, :, h].transpose(1, 2) / math.sqrt(d), dim=-1)  # [N, 1, T]
        out[:, h * d:(h + 1) * d] = (w @ v[:, :, h])[:, 0]
    return out @ att.out_proj.weight.T + att.out_proj.bias


def test_attention_pool_equals_clips_attention_pooling_written_out() -> None:
    torch.manual_seed(1)
    pool = AttentionPool2d((3, 4), channels=8, heads=2)
    fmap = torch.randn(5, 8, 3, 4)
    torch.testing.assert_close(pool(fmap), _clip_attnpool_by_hand(pool, fmap), rtol=1e-5, atol=1e-5)
    with pytest.raises(ClBenchError, match="image size the model was trained on"):
        pool(torch.randn(1, 8, 4, 4))


def test_attention_pool_sees_where_things_are() -> None:
    """A mean or max pool cannot tell a map from its mirror image; the positional embedding can."""
    torch.manual_seed(2)
    pool = AttentionPool2d((2, 2), channels=4, heads=1)
    fmap = torch.zeros(1, 4, 2, 2)
    fmap[0, :, 0, 0] = 3.0
    mirrored = fmap.flip(-1)
    assert torch.equal(fmap.amax((2, 3)), mirrored.amax((2, 3)))
    assert not torch.allclose(pool(fmap), pool(mirrored))
