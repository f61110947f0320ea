"""Minimal valid trees of each real on-disk format, written for the hostile corpus to spoil.

Each writer puts one small, *valid* dataset in its official layout under ``root`` (the data
root) and returns the paths a case will damage. The corpus then changes one thing, so the
error it expects is about that thing and nothing else.
"""

from __future__ import annotations

import gzip
import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def png(path: Path, size: tuple[int, int] = (32, 32), value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def jpg(path: Path, size: tuple[int, int] = (32, 32), value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path, format="JPEG")
    return path


def bomb_png(path: Path, side: int = 60_000) -> Path:
    """A valid PNG header declaring side x side pixels, followed by a few bytes of data: a
    decoder that trusts the header would inflate ~10 GB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        import zlib

        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    import zlib

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * 4096)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


# ----------------------------------------------------------------------------------- COCO


def coco_doc(file_name: str = "000001.jpg") -> dict:
    return {
        "images": [{"id": 1, "file_name": file_name, "height": 32, "width": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [2.0, 3.0, 10.0, 12.0],
                         "area": 120.0, "iscrowd": 0,
                         "segmentation": [[2.0, 3.0, 12.0, 3.0, 12.0, 15.0, 2.0, 15.0]]}],
        "categories": [{"id": 3, "name": "thing", "supercategory": "x"}],
    }


def coco_tree(root: Path) -> dict[str, Path]:
    """``root/coco/annotations/instances_{train,val}2017.json`` + one image per split."""
    base = root / "coco"
    out = {}
    for split in ("train", "val"):
        jpg(base / f"{split}2017" / "000001.jpg")
        js = base / "annotations" / f"instances_{split}2017.json"
        js.parent.mkdir(parents=True, exist_ok=True)
        js.write_text(json.dumps(coco_doc()))
        out[split] = js
    return out


# ----------------------------------------------------------------------------------- VOC

VOC_XML = """<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
<object><name>{name}</name><difficult>{difficult}</difficult><truncated>0</truncated>
<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object></annotation>
"""


def voc_tree(root: Path, **fields: object) -> dict[str, Path]:
    """``root/VOCdevkit/VOC{2007,2012}`` with one image each in trainval / test."""
    values = {"w": 32, "h": 32, "name": "dog", "difficult": 0, "x0": 2, "y0": 3, "x1": 20, "y1": 25, **fields}
    out = {}
    for year in ("2007", "2012"):
        d = root / "VOCdevkit" / f"VOC{year}"
        jpg(d / "JPEGImages" / "000001.jpg")
        (d / "Annotations").mkdir(parents=True, exist_ok=True)
        (d / "Annotations" / "000001.xml").write_text(VOC_XML.format(**values))
        (d / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        for s in ("trainval", "test"):
            (d / "ImageSets" / "Main" / f"{s}.txt").write_text("000001\n")
        out[year] = d
    return out


# ----------------------------------------------------------------------------------- TruthfulQA


def truthfulqa_tree(root: Path, mc1_labels: list | None = None) -> Path:
    path = root / "truthfulqa" / "data" / "mc_task.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = mc1_labels if mc1_labels is not None else [1, 0]
    rows = [{"question": "Is the sky green?",
             "mc1_targets": dict(zip(["No.", "Yes."], labels)),
             "mc2_targets": {"No.": 1, "Yes.": 0}}]
    path.write_text(json.dumps(rows))
    return path


# ----------------------------------------------------------------------------------- MMEB


def mmeb_tree(root: Path, qry_img: str = "VOC2007/a.jpg", zip_member: bytes | None = None) -> Path:
    """``root/MMEB-eval/VOC2007/test-00000-of-00001.parquet`` + ``images.zip``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = root / "MMEB-eval"
    (base / "VOC2007").mkdir(parents=True, exist_ok=True)
    table = pa.table({"qry_text": ["<|image_1|> what is this?"], "qry_img_path": [qry_img],
                      "tgt_text": [["dog", "cat"]], "tgt_img_path": [["", ""]]})
    pq.write_table(table, base / "VOC2007" / "test-00000-of-00001.parquet")
    buf = Path(str(base / "a.jpg"))
    jpg(buf)
    with zipfile.ZipFile(base / "images.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("VOC2007/a.jpg", zip_member if zip_member is not None else buf.read_bytes())
    buf.unlink()
    return base


def zip_bomb_member(n: int = 600 * 2**20) -> bytes:
    """Bytes whose DEFLATE in a zip is tiny but whose declared size is ``n``."""
    return b"\0" * n


# ----------------------------------------------------------------------------------- MMVP


def mmvp_tree(root: Path, type_name: str = "Orientation") -> Path:
    base = root / "MMVP_VLM"
    rows = ["qid,type,statement", f"1,{type_name},the dog faces left", f"2,{type_name},the dog faces right"]
    base.mkdir(parents=True, exist_ok=True)
    (base / "Questions.csv").write_text("\n".join(rows) + "\n")
    for qid in (1, 2):
        jpg(base / "MLLM_VLM Images" / "Orientation" / f"{qid}.jpg")
    return base


# ----------------------------------------------------------------------------------- CIFAR


def cifar10_py_tree(root: Path, batch: bytes | None = None) -> Path:
    """``root/cifar-10-batches-py`` (protocol-2 pickles as Python 3 writes them)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    x = np.zeros((2, 3072), np.uint8)
    good = pickle.dumps({b"data": x, b"labels": [0, 1], b"batch_label": b"b"}, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / name).write_bytes(good)
    if batch is not None:
        (d / "data_batch_1").write_bytes(batch)
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}, protocol=2))
    return d


def pickle_array_claiming(shape: tuple[int, ...], data: bytes, dtype: bytes = b"u1") -> bytes:
    """A protocol-2 pickle of ``{b'data': ndarray, b'labels': [0]}`` written opcode by opcode, whose
    array state claims ``shape`` and ``dtype`` over the raw bytes ``data`` (as numpy would pickle a
    real array, but with whatever numbers a hostile file likes)."""
    def short(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    dt = (b"cnumpy\ndtype\n" + short(dtype) + b"\x89\x88\x87R"
          + b"(K\x03" + short(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    shape_ops = b"(" + b"".join(b"J" + struct.pack("<i", s) for s in shape) + b"t"
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85" + short(b"b")
             + b"\x87R" + b"(K\x01" + shape_ops + dt + b"\x89" + b"B" + struct.pack("<I", len(data)) + data + b"tb")
    return b"\x80\x02}(" + short(b"data") + array + short(b"labels") + b"]K\x00a" + b"u."


# ----------------------------------------------------------------------------------- MNIST


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


def mnist_tree(root: Path) -> Path:
    d = root / "mnist"
    d.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 4), ("t10k", 2)):
        (d / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(2051, (n, 28, 28), bytes(n * 784))))
        (d / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(2049, (n,), bytes(range(n)))))
    return d


def gzip_bomb(n: int = 300 * 2**20) -> bytes:
    """~300 KB of gzip that inflates to ``n`` bytes (an idx header first, so only the size is wrong)."""
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [c.compress(idx_bytes(2051, (n // 784, 28, 28), b""))]
    block = b"\0" * 2**20
    for _ in range(n // len(block)):
        parts.append(c.compress(block))
    parts.append(c.flush())
    return b"".join(parts)


# ----------------------------------------------------------------------------------- image folder


def imagefolder_tree(root: Path) -> Path:
    base = root / "imagefolder"
    for split in ("train", "val"):
        for cls, v in (("cat", 40), ("dog", 200)):
            for k in range(2):
                png(base / split / cls / f"{k}.png", (24, 24), v + k)
    return base


# ----------------------------------------------------------------------------------- STL-10, Tatoeba, Karpathy


def stl10_tree(root: Path) -> Path:
    d = root / "stl10_binary"
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 2), ("test", 2)):
        (d / f"{split}_X.bin").write_bytes(bytes(n * 3 * 96 * 96))
        (d / f"{split}_y.bin").write_bytes(bytes([1, 2][:n]))
    return d


def tatoeba_tree(root: Path, deu: bytes = b"Hallo Welt\nGuten Tag\n") -> Path:
    d = root / "tatoeba"
    d.mkdir(parents=True, exist_ok=True)
    (d / "tatoeba.deu-eng.deu").write_bytes(deu)
    (d / "tatoeba.deu-eng.eng").write_text("Hello world\nGood day\n")
    return d


def karpathy_tree(root: Path, entry: dict | None = None) -> Path:
    base = root / "coco"
    jpg(base / "val2014" / "a.jpg")
    e = entry or {"split": "test", "filepath": "val2014", "filename": "a.jpg", "sentences": [{"raw": "a grey square"}]}
    (base / "dataset_coco.json").write_text(json.dumps({"images": [e]}))
    return base
