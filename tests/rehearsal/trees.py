"""Miniature data trees in the official layouts, under one data root (``build_data_root``).

Real bytes where ``../shared/data`` has them: the VOC2007/VOC2012 JPEGs and XML, the COCO-2014
annotation subsets (their images are real VOC photographs resized to each entry's size), the
Cityscapes val frame (copied into train and val), MNIST t10k, LASER's Tatoeba files and
TruthfulQA's ``mc_task.json``. Generated, in the published layout, otherwise: an ImageNet
ImageFolder with wnid folders and ``classnames.txt``, CIFAR-10/100 binary, STL-10 binary, MNIST's
train idx files, MMEB-eval parquet + ``images.zip`` for all 36 datasets, MMVP_VLM
``Questions.csv`` + images for the 9 patterns, Karpathy ``dataset_coco.json`` /
``dataset_flickr30k.json``, SST-2 / AG News / TREC / RTE as ``datasets`` ``save_to_disk`` folders,
and the Hugging Face ``truthful_qa`` ``multiple_choice`` parquet (``build_truthfulqa_parquet_root``).
Existing loader tests' generators are reused.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import SHARED_DATA
from tests.data.image.test_data_real import _write_cifar10_bin, _write_stl10
from tests.data.image_text.test_caption_loaders import write_coco, write_flickr
from tests.protocols.test_mmeb import png, write_mmeb
from tests.protocols.test_mmvp import write_release
from tests.test_byo_checkpoints import image_tree

VOC = SHARED_DATA / "voc_coco_samples" / "VOCdevkit"
COCO_SUBSETS = SHARED_DATA / "voc_coco_samples" / "coco2014_subsets"
CITYSCAPES = SHARED_DATA / "cityscapes_sample"
WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361"]
CLASSNAMES = ["tench", "goldfish", "great white shark", "tiger shark"]


def build_data_root(root: Path) -> Path:
    """Every layout the real tasks read, under ``root`` (the ``--data-root``)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(VOC, root / "VOCdevkit")
    write_coco_detection(root / "coco")
    write_cityscapes(root / "cityscapes")
    write_ade20k(root / "ADEChallengeData2016")
    write_imagenet(root / "imagenet")
    image_tree(root, n_train=4, n_val=5)  # imagefolder/{train,val}/{cat,dog}
    _write_cifar10_bin(root / "cifar-10-batches-bin", per_batch=4, n_test=10)
    write_cifar100_binary(root / "cifar-100-binary")
    _write_stl10(root / "stl10_binary", n_train=20, n_test=10)
    write_mnist(root / "mnist")
    write_mmeb_all(root / "MMEB-eval")
    write_mmvp_vlm(root / "MMVP_VLM")
    write_coco(root)  # coco/dataset_coco.json + val2014/ train2014/
    write_flickr(root)
    (root / "truthfulqa" / "data").mkdir(parents=True)
    shutil.copy(SHARED_DATA / "truthfulqa" / "data" / "mc_task.json", root / "truthfulqa" / "data" / "mc_task.json")
    shutil.copytree(SHARED_DATA / "tatoeba", root / "tatoeba", ignore=shutil.ignore_patterns("README.md"))
    write_fewshot_save_to_disk(root)
    return root


# ------------------------------------------------------------------------------------------- dense
def write_coco_detection(folder: Path) -> None:
    """``annotations/instances_{train,val}2017.json`` from two real COCO-2014 subsets (cat for train,
    dog for val: polygon masks, COCO's own non-contiguous category ids) with COCO 2017's file names
    (``<id:012d>.jpg``; the samples name every image ``color.jpg``); each image file is a real VOC
    photograph resized to the entry's width x height. The category list keeps the categories that
    occur (cat 17, dog 18): with all 80, a detector fine-tuned for two iterations scores every box
    below the 0.05 test threshold (uniform over 81 classes) and COCOeval is never reached."""
    photos = sorted((VOC / "VOC2007" / "JPEGImages").glob("*.jpg")) + sorted((VOC / "VOC2012" / "JPEGImages").glob("*.jpg"))
    (folder / "annotations").mkdir(parents=True)
    docs = {split: json.loads((COCO_SUBSETS / f"{subset}.json").read_text())
            for split, subset in (("train2017", "cat"), ("val2017", "dog"))}
    used = {a["category_id"] for doc in docs.values() for a in doc["annotations"]}
    k = 0
    for split, doc in docs.items():
        doc["categories"] = [c for c in doc["categories"] if c["id"] in used]
        (folder / split).mkdir()
        for img in doc["images"]:
            img["file_name"] = f"{img['id']:012d}.jpg"
            with Image.open(photos[k % len(photos)]) as im:
                im.convert("RGB").resize((img["width"], img["height"])).save(folder / split / img["file_name"],
                                                                              quality=90)
            k += 1
        (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))


def write_ade20k(folder: Path, n_train: int = 3, n_val: int = 2) -> None:
    """``ADEChallengeData2016/images|annotations/{training,validation}``: real VOC photographs (resized,
    JPEG) with generated annotation PNGs (mode L: 0 = other, then horizontal bands of classes 1..150)."""
    photos = sorted((VOC / "VOC2007" / "JPEGImages").glob("*.jpg"))
    rng = np.random.default_rng(3)
    k = 0
    for split, prefix, n in (("training", "ADE_train_", n_train), ("validation", "ADE_val_", n_val)):
        (folder / "images" / split).mkdir(parents=True)
        (folder / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            w, h = 160 + 16 * i, 120
            stem = f"{prefix}{i + 1:08d}"
            with Image.open(photos[k % len(photos)]) as im:
                im.convert("RGB").resize((w, h)).save(folder / "images" / split / f"{stem}.jpg", quality=90)
            k += 1
            lab = np.zeros((h, w), np.uint8)
            for band in range(4):
                lab[band * 30:(band + 1) * 30, 8:] = rng.integers(1, 151)
            Image.fromarray(lab, mode="L").save(folder / "annotations" / split / f"{stem}.png")


def write_cityscapes(folder: Path) -> None:
    """The real val frame (Frankfurt 000000_000294, 256x128) as the train and the val split."""
    for split in ("train", "val"):
        for kind in ("leftImg8bit", "gtFine"):
            shutil.copytree(CITYSCAPES / kind / "val", folder / kind / split)


# ------------------------------------------------------------------------------------------- images
def _photo(rng: np.random.Generator, size: tuple[int, int], c: int) -> Image.Image:
    base = np.zeros((size[1], size[0], 3), np.uint8)
    base[..., c % 3] = 90 + 40 * (c // 3)
    return Image.fromarray(base + rng.integers(0, 100, base.shape, dtype=np.uint8))


def write_imagenet(folder: Path, n_train: int = 3, n_val: int = 3) -> None:
    """ILSVRC2012 as ImageFolder: ``{train,val}/<wnid>/*.JPEG`` and ``classnames.txt`` (sorted-wnid order)."""
    rng = np.random.default_rng(0)
    for c, wnid in enumerate(WNIDS):
        for split, n in (("train", n_train), ("val", n_val)):
            (folder / split / wnid).mkdir(parents=True)
            for i in range(n):
                name = f"{wnid}_{i}.JPEG" if split == "train" else f"ILSVRC2012_val_{c * n + i + 1:08d}.JPEG"
                _photo(rng, (120 + 8 * i, 90), c).save(folder / split / wnid / name, format="JPEG", quality=90)
    (folder / "classnames.txt").write_text("\n".join(CLASSNAMES) + "\n")


def write_cifar100_binary(folder: Path, n_train: int = 200, n_test: int = 10) -> None:
    """``train.bin`` / ``test.bin``: <coarse label byte><fine label byte><3072 pixel bytes> per record."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, n in (("train.bin", n_train), ("test.bin", n_test)):
        fine = np.arange(n) % 100
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        (folder / name).write_bytes(b"".join(bytes([int(f) // 5, int(f)]) + x[j].tobytes() for j, f in enumerate(fine)))
    (folder / "fine_label_names.txt").write_text("\n".join(f"fine{i}" for i in range(100)) + "\n")
    (folder / "coarse_label_names.txt").write_text("\n".join(f"coarse{i}" for i in range(20)) + "\n")


def _idx(magic: int, array: np.ndarray) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def write_mnist(folder: Path, n_train: int = 40) -> None:
    """The real t10k pair (gzip, as published) and a generated train pair in the same idx format."""
    folder.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED_DATA / "mnist" / name, folder / name)
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    labels = (np.arange(n_train) % 10).astype(np.uint8)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(2051, images)))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(2049, labels)))


# --------------------------------------------------------------------------------------- image-text
def write_mmeb_all(folder: Path, rows: int = 3, n_cand: int = 3) -> None:
    """All 36 MMEB-eval datasets (``<Dataset>/test-00000-of-00001.parquet``) and ``images.zip``:
    classification / VQA rows score an image + instruction against text candidates, retrieval and
    grounding rows against image candidates."""
    from cl_bench.data.image_text.mmeb import MMEB_DATASETS

    datasets, images = {}, {}
    for d, (name, (meta_task, _)) in enumerate(MMEB_DATASETS.items()):
        out = []
        for i in range(rows):
            qimg = f"{name}/q{i}.png"
            images[qimg] = png(1000 * d + i, (24, 20))
            if meta_task in ("retrieval", "grounding"):
                timgs = [f"{name}/c{i}_{j}.png" for j in range(n_cand)]
                for j, p in enumerate(timgs):
                    images[p] = png(100_000 + 1000 * d + 10 * i + j, (24, 20))
                ttext = ["" for _ in range(n_cand)]
            else:
                timgs, ttext = ["" for _ in range(n_cand)], [f"a red star {i} {j}" for j in range(n_cand)]
            out.append({"qry_text": f"<|image_1|>\nRepresent the given image {name} {i}", "qry_img_path": qimg,
                        "tgt_text": ttext, "tgt_img_path": timgs})
        datasets[name] = out
    write_mmeb(folder, datasets, images)


MMVP_TYPES = ["Orientation", "Presence", "State", "Quantity", "Spatial", "Color", "Structural Character", "Text",
              "Camera Perspective"]


def write_mmvp_vlm(folder: Path, pairs_per_pattern: int = 2) -> None:
    """``Questions.csv`` (Question ID, Type, Statement; consecutive rows a pair, patterns in
    evaluate_vlm.py's order) and ``MLLM_VLM Images/<Type>/<id>.jpg``."""
    rows, qid = [], 1
    for kind in MMVP_TYPES:
        for p in range(pairs_per_pattern):
            rows.append((str(qid), kind, f"a photo of the first {kind.lower()} {p}"))
            rows.append((str(qid + 1), kind, f"a photo of the second {kind.lower()} {p}"))
            qid += 2
    write_release(folder, rows)


def build_truthfulqa_parquet_root(root: Path) -> Path:
    """``truthfulqa/multiple_choice/validation-00000-of-00001.parquet`` with the Hugging Face
    columns (question, mc1_targets, mc2_targets as {choices, labels}), 817 rows like the original:
    the 790 real questions of the official ``mc_task.json``, then its first 27 again."""
    from cl_bench.data.text.truthfulqa import load_truthfulqa
    from tests.data.text.test_truthfulqa import _hf_rows

    questions = load_truthfulqa({"source": "mc_json", "empty_choices": "drop"}, SHARED_DATA).questions
    questions = questions + questions[: 817 - len(questions)]
    folder = root / "truthfulqa" / "multiple_choice"
    folder.mkdir(parents=True)
    _hf_rows(questions).to_parquet(folder / "validation-00000-of-00001.parquet")
    return root


# -------------------------------------------------------------------------------------------- text
def write_fewshot_save_to_disk(root: Path, n_train: int = 48, n_test: int = 10) -> None:
    """GLUE SST-2 and RTE, AG News and TREC as ``DatasetDict.save_to_disk`` folders with the hub's
    columns and splits (``sst2/``, ``rte/``, ``ag_news/``, ``trec/``)."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()

    def dd(features: Features, splits: dict[str, int], row) -> DatasetDict:
        return DatasetDict({s: Dataset.from_list([row(s, i) for i in range(n)], features=features)
                            for s, n in splits.items()})

    words = ["good", "bad", "fine", "dull", "great", "awful", "fun", "slow"]
    sst2 = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"]),
                     "idx": Value("int32")})
    dd(sst2, {"train": n_train, "validation": n_test, "test": 2},
       lambda s, i: {"sentence": f"a {words[i % 8]} {s} film {i} ", "label": i % 2, "idx": i}).save_to_disk(str(root / "sst2"))
    rte = Features({"sentence1": Value("string"), "sentence2": Value("string"),
                    "label": ClassLabel(names=["entailment", "not_entailment"]), "idx": Value("int32")})
    dd(rte, {"train": n_train, "validation": n_test, "test": 2},
       lambda s, i: {"sentence1": f"A cat sat on {s} mat {i}.", "sentence2": f"A {words[i % 8]} cat sat.", "label": i % 2,
                  "idx": i}).save_to_disk(str(root / "rte"))
    ag = Features({"text": Value("string"), "label": ClassLabel(names=["World", "Sports", "Business", "Sci/Tech"])})
    dd(ag, {"train": n_train, "test": n_test},
       lambda s, i: {"text": f"{s} headline {i}: markets and matches, {words[i % 8]} news.", "label": i % 4}
       ).save_to_disk(str(root / "ag_news"))
    coarse = ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]
    trec = Features({"text": Value("string"), "coarse_label": ClassLabel(names=coarse),
                     "fine_label": Value("int32")})
    dd(trec, {"train": n_train, "test": n_test},
       lambda s, i: {"text": f"What is {s} question number {i} ?", "coarse_label": i % 6, "fine_label": i}
       ).save_to_disk(str(root / "trec"))
