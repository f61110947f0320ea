"""Real-layout loaders: Karpathy-split COCO / Flickr30k captions and ImageNet-style zero-shot
folders, on fixtures written here in exactly those layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cl_bench import components
from cl_bench.errors import ClBenchError


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (12, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def write_coco(root: Path) -> None:
    """DATA_ROOT/coco/dataset_coco.json + val2014/ + train2014/ (Karpathy's format)."""
    entries = []
    specs = [("val2014", "test", 5, (255, 0, 0)), ("val2014", "val", 5, (0, 255, 0)),
             ("train2014", "train", 5, (0, 0, 255)), ("val2014", "test", 7, (9, 9, 9)),
             ("val2014", "restval", 5, (1, 2, 3)), ("val2014", "test", 5, (200, 100, 0))]
    for k, (folder, split, n_caps, colour) in enumerate(specs):
        name = f"COCO_{folder}_{k:012d}.jpg"
        _png(root / "coco" / folder / name, colour)
        entries.append({"filepath": folder, "filename": name, "imgid": k, "split": split, "cocoid": k,
                        "sentences": [{"raw": f"image {k} caption {j} ", "tokens": ["image"], "imgid": k,
                                       "sentid": 10 * k + j} for j in range(n_caps)]})
    (root / "coco" / "dataset_coco.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))


def write_flickr(root: Path) -> None:
    """DATA_ROOT/flickr30k/dataset_flickr30k.json + flickr30k-images/."""
    entries = []
    for k, split in enumerate(["train", "test", "val", "test"]):
        name = f"{1000 + k}.jpg"
        _png(root / "flickr30k" / "flickr30k-images" / name, (k * 40, 0, 0), (20, 10))
        entries.append({"filename": name, "imgid": k, "split": split,
                        "sentences": [{"raw": f"a flickr photo {k}.{j}"} for j in range(5)]})
    (root / "flickr30k" / "dataset_flickr30k.json").write_text(json.dumps({"images": entries,
                                                                           "dataset": "flickr30k"}))


def write_imagenet(root: Path) -> None:
    """DATA_ROOT/imagenet/val/<wnid>/*.JPEG + classnames.txt (sorted-folder order)."""
    for c, wnid in enumerate(["n01440764", "n01443537", "n01484850"]):
        for j in range(c + 1):
            _png(root / "imagenet" / "val" / wnid / f"ILSVRC2012_val_{c}{j}.JPEG", (c * 100, j * 50, 0))
    (root / "imagenet" / "val" / "n01440764" / "readme.txt").write_text("not an image")
    (root / "imagenet" / "classnames.txt").write_text("tench\ngoldfish\ngreat white shark\n")


def test_coco_karpathy_test_split(tmp_path):
    write_coco(tmp_path)
    data = components.get("dataset", "coco-captions")({"image_size": 16}, tmp_path)
    test = data.test
    assert data.train is None and len(test) == 3
    assert [len(c) for c in test.captions] == [5, 7, 5]  # every caption kept (COCO has some with 7)
    assert test.captions[1][6] == "image 3 caption 6"  # raw, stripped
    texts, owner = test.caption_texts()
    assert len(texts) == 17 and owner.tolist() == [0] * 5 + [1] * 7 + [2] * 5
    x = test.images.tensor(slice(0, 2))
    assert x.shape == (2, 3, 16, 16) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert x[0, 0].mean() > 0.95 and x[0, 1].mean() < 0.05  # the red test image, first in file order
    assert test.images.tensor([2]).shape == (1, 3, 16, 16)
    assert data.arch_inputs == {"in_channels": 3, "image_size": (16, 16)}
    val = components.get("dataset", "coco-captions")({"split": "val", "image_size": 16}, tmp_path)
    assert len(val.test) == 1 and val.fingerprint != data.fingerprint
    again = components.get("dataset", "coco-captions")({"image_size": 16}, tmp_path)
    assert again.fingerprint == data.fingerprint


def test_flickr30k_karpathy_test_split(tmp_path):
    write_flickr(tmp_path)
    data = components.get("dataset", "flickr30k-captions")({"image_size": 8}, tmp_path)
    assert len(data.test) == 2 and all(len(c) == 5 for c in data.test.captions)
    assert data.test.captions[0][0] == "a flickr photo 1.0"
    assert data.test.images.rel_paths == ["flickr30k-images/1001.jpg", "flickr30k-images/1003.jpg"]
    assert data.test.images.tensor().shape == (2, 3, 8, 8)


def test_imagenet_zeroshot_folder(tmp_path):
    write_imagenet(tmp_path)
    data = components.get("dataset", "imagenet-zeroshot")({"image_size": 8}, tmp_path)
    assert data.class_names == ["tench", "goldfish", "great white shark"]
    assert data.test.labels.tolist() == [0, 1, 1, 2, 2, 2]  # readme.txt is not an image
    assert data.templates is None and data.num_classes == 3
    assert data.test.images.tensor(3).shape == (1, 3, 8, 8)


def test_missing_and_bad_files_name_the_layout(tmp_path):
    coco = components.get("dataset", "coco-captions")
    with pytest.raises(ClBenchError, match="needs real data"):
        coco({}, None)
    with pytest.raises(ClBenchError, match=r"coco.*missing; expected DATA_ROOT/coco/dataset_coco.json"):
        coco({}, tmp_path)
    write_coco(tmp_path)
    (tmp_path / "coco" / "val2014" / "COCO_val2014_000000000003.jpg").unlink()
    with pytest.raises(ClBenchError, match="COCO_val2014_000000000003.jpg is missing"):
        coco({}, tmp_path)
    (tmp_path / "coco" / "dataset_coco.json").write_text("{not json")
    with pytest.raises(ClBenchError, match="Karpathy split JSON .*dataset_coco.json is not valid JSON"):
        coco({}, tmp_path)
    (tmp_path / "coco" / "dataset_coco.json").write_text(json.dumps({"images": [{"split": "test"}]}))
    with pytest.raises(ClBenchError, match=r"dataset_coco.json .*missing required field 'images.0.filename'"):
        coco({}, tmp_path)
    with pytest.raises(ClBenchError, match="split must be one of"):
        coco({"split": "dev"}, tmp_path)
    with pytest.raises(ClBenchError, match="unknown field"):
        coco({"splitt": "test"}, tmp_path)
    with pytest.raises(ClBenchError, match="flickr30k-images/<filename>"):
        components.get("dataset", "flickr30k-captions")({}, tmp_path)

    inet = components.get("dataset", "imagenet-zeroshot")
    with pytest.raises(ClBenchError, match="imagenet/val/<class folder>/<image>"):
        inet({}, tmp_path)
    write_imagenet(tmp_path)
    (tmp_path / "imagenet" / "classnames.txt").write_text("tench\ngoldfish\n")
    with pytest.raises(ClBenchError, match="2 class names but .* 3 class folders"):
        inet({}, tmp_path)
    (tmp_path / "imagenet" / "classnames.txt").unlink()
    with pytest.raises(ClBenchError, match="class-names file .* is missing"):
        inet({}, tmp_path)


def test_undecodable_image_is_a_clear_error(tmp_path):
    write_flickr(tmp_path)
    (tmp_path / "flickr30k" / "flickr30k-images" / "1001.jpg").write_bytes(b"garbage")
    data = components.get("dataset", "flickr30k-captions")({}, tmp_path)
    with pytest.raises(ClBenchError, match="cannot decode image"):
        data.test.images.tensor(0)
    assert np.asarray(data.test.images.tensor(1)).shape == (1, 3, 224, 224)
