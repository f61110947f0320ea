"""The ImageTextEncoder interface's shared behaviour: embed_pairs fusion and embed_split."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cl_bench.data.image_text.types import CaptionedImages, ImageList
from cl_bench.data.text.types import TextSplit
from cl_bench.models.interfaces.image_text import ImageTextEncoder


class Towers(ImageTextEncoder):
    embed_dim = 3
    batch_size = 2

    def embed_images(self, images):
        return F.normalize(images.mean(dim=(2, 3)), dim=-1)  # per-channel means

    def embed_texts(self, texts):
        return F.normalize(torch.tensor([[len(t), t.count("a"), 1.0] for t in texts]), dim=-1)


def test_embed_pairs_is_the_normalised_sum_of_present_towers():
    m = Towers()
    img = torch.rand(2, 3, 4, 4)
    out = m.embed_pairs(["aa b", None, "c"], [img[0], img[1], None])
    t = m.embed_texts(["aa b", "c"])
    i = m.embed_images(img)
    expect = torch.stack([F.normalize(t[0] + i[0], dim=0), i[1], t[1]])
    assert torch.allclose(out, expect, atol=1e-6)
    with pytest.raises(ValueError):
        m.embed_pairs(["x"], [])


def test_embed_split_batches_images_and_texts_in_order():
    m = Towers()
    images = (np.arange(5 * 4 * 4 * 3) % 251).astype(np.uint8).reshape(5, 4, 4, 3)
    il = ImageList(images)
    assert il.tensor().shape == (5, 3, 4, 4)
    feats = m.embed_split(il, torch.device("cpu"))
    assert np.allclose(feats, m.embed_images(il.tensor()).numpy(), atol=1e-6)
    ts = TextSplit(["a", "bb", "aaa", "c", "dd"])
    assert np.allclose(m.embed_split(ts, torch.device("cpu")), m.embed_texts(ts.texts).numpy(), atol=1e-6)
    with pytest.raises(TypeError):
        m.embed_split([1, 2], torch.device("cpu"))


def test_captioned_images_fingerprint_and_caption_owners():
    images = ImageList(np.zeros((2, 3, 2, 2), np.uint8))
    a = CaptionedImages(images, [["x", "y"], ["z"]], labels=np.array([0, 1]))
    texts, owner = a.caption_texts()
    assert texts.texts == ["x", "y", "z"] and owner.tolist() == [0, 0, 1]
    # moving a caption to the other image changes the content, so the fingerprint changes
    b = CaptionedImages(images, [["x"], ["y", "z"]], labels=np.array([0, 1]))
    assert a.fingerprint != b.fingerprint
    with pytest.raises(ValueError):
        CaptionedImages(images, [["x"], []])
