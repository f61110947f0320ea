"""MMEB-eval (VLM2Vec v1, Hugging Face ``TIGER-Lab/MMEB-eval``): 36 query/candidate datasets in
four meta-tasks, 20 in-distribution (IND: their train splits are in MMEB-train) and 16 OOD.

On-disk layout (a clone of the Hugging Face dataset; ``--data-root`` points above it)::

    DATA_ROOT/MMEB-eval/
        <Dataset>/test-00000-of-00001.parquet    (or <Dataset>/test/0000.parquet, the parquet branch)
        images.zip                               read directly, or unpacked as eval_images/

A row is ``qry_text: str``, ``qry_img_path: str`` ("" = no image), ``tgt_text: list[str]`` and
``tgt_img_path: list[str]`` (the candidates; the answer is always index 0). Image paths are
relative to the unpacked folder (``--image_dir eval_images/`` in VLM2Vec's scripts); inside
``images.zip`` a path is found as is or under the zip's top-level folder. ``tgt_text == ""``
(a string, not a list) means "no text for any candidate", as VLM2Vec's ``eval_clip.py`` reads it.

Images are decoded when a protocol asks for them (:meth:`PairItems.batches`). With
``image_size: null`` (the real task's setting) each is handed to the model as decoded, at its own
size, as VLM2Vec's eval does (its processor gets the original PIL image: a dynamic-resolution
embedder sees whole documents, charts and grounding crops; a two-tower CLIP applies its own
resize + centre crop). With an integer ``image_size`` (the embedded twin's, whose images are
already that square) each is resized so its short side is ``image_size`` and centre-cropped.

Errors a user can cause (one line naming dataset and row): a missing dataset folder or parquet
file, a row whose image is in neither the folder nor the zip, a row whose ``tgt_text`` and
``tgt_img_path`` lists differ in length, a row with no candidates.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from cl_bench.bounded_io import MAX_DATA_TEXT_BYTES, MAX_MEMBER_BYTES, read_bytes, read_zip_member
from cl_bench.components import register
from cl_bench.data.image_decode import open_image
from cl_bench.data.image_text.types import ImageList
from cl_bench.data.image_text.mmvp import training_split
from cl_bench.data.safe_paths import OptionalRelPath, safe_relpath
from cl_bench.data.text.types import fingerprint_texts
from cl_bench.errors import ClBenchError
from cl_bench.specs import validate_params
from cl_bench.suggest import did_you_mean

META_TASKS: tuple[str, ...] = ("classification", "vqa", "retrieval", "grounding")
SPLITS: tuple[str, ...] = ("IND", "OOD")
# The 36 datasets: meta-task and IND/OOD (arXiv 2410.05160 Table 1; the IND ones are MMEB-train's 20).
MMEB_DATASETS: dict[str, tuple[str, str]] = {
    **{n: ("classification", "IND") for n in ("ImageNet-1K", "N24News", "HatefulMemes", "VOC2007", "SUN397")},
    **{n: ("classification", "OOD") for n in ("Place365", "ImageNet-A", "ImageNet-R", "ObjectNet", "Country211")},
    **{n: ("vqa", "IND") for n in ("OK-VQA", "A-OKVQA", "DocVQA", "InfographicsVQA", "ChartQA", "Visual7W")},
    **{n: ("vqa", "OOD") for n in ("ScienceQA", "VizWiz", "GQA", "TextVQA")},
    **{n: ("retrieval", "IND") for n in ("VisDial", "CIRR", "VisualNews_t2i", "VisualNews_i2t", "MSCOCO_t2i",
                                         "MSCOCO_i2t", "NIGHTS", "WebQA")},
    **{n: ("retrieval", "OOD") for n in ("OVEN", "FashionIQ", "EDIS", "Wiki-SS-NQ")},
    "MSCOCO": ("grounding", "IND"),
    **{n: ("grounding", "OOD") for n in ("Visual7W-Pointing", "RefCOCO", "RefCOCO-Matching")},
}
LAYOUT = ("expected DATA_ROOT/{root}/<Dataset>/test-*.parquet (qry_text, qry_img_path, tgt_text, "
          "tgt_img_path) and DATA_ROOT/{root}/images.zip (or its unpacked {image_dir}/)")


class ImageSource:
    """Images by relative path: an unpacked folder, or ``images.zip`` read in place."""

    def __init__(self, folder: Path | None = None, zip_path: Path | None = None) -> None:
        if (folder is None) == (zip_path is None):
            raise ValueError("give exactly one of folder, zip_path")
        self.folder, self.zip_path = folder, zip_path
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid = 0
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self._prefixes: list[str] = []
        if zip_path is not None:
            try:
                with zipfile.ZipFile(zip_path) as z:
                    self._infos = {i.filename: i for i in z.infolist() if not i.is_dir()}
            except (OSError, zipfile.BadZipFile) as e:
                raise ClBenchError(f"{zip_path} is not a readable zip file ({e})") from None
            self._prefixes = sorted({n.split("/", 1)[0] + "/" for n in self._infos if "/" in n})

    def __getstate__(self) -> dict[str, Any]:  # picklable for loader workers: no open zip handle
        return {**self.__dict__, "_zip": None, "_zip_pid": 0}

    @property
    def where(self) -> str:
        if self.folder is not None and not self.folder.is_dir():
            return f"{self.folder} (neither it nor images.zip exists)"
        return str(self.folder or self.zip_path)

    def _member(self, rel: str) -> str | None:
        if rel in self._infos:
            return rel
        return next((p + rel for p in self._prefixes if p + rel in self._infos), None)

    def stamp(self, rel: str) -> str | None:
        """A cheap content stamp of the image (zip: CRC-32 and size; folder: size and mtime), None if absent."""
        if self.folder is not None:
            path = self.folder / rel
            try:
                st = path.stat()
            except OSError:
                return None
            return f"{st.st_size}:{st.st_mtime_ns}" if path.is_file() else None
        member = self._member(rel)
        return None if member is None else f"{self._infos[member].CRC}:{self._infos[member].file_size}"

    def read(self, rel: str) -> bytes:
        """The image's bytes: a regular file inside the folder, or a zip member whose declared size
        and compression ratio are sane (checked before it is inflated)."""
        safe_relpath(rel, f"image path of {self.where}")
        if self.folder is not None:
            return read_bytes(self.folder / rel, MAX_MEMBER_BYTES, "image")
        if self._zip is None or self._zip_pid != os.getpid():  # a forked loader worker opens its own
            self._zip, self._zip_pid = zipfile.ZipFile(self.zip_path), os.getpid()  # type: ignore[arg-type]
        member = self._member(rel)
        if member is None:
            raise ClBenchError(f"image {rel!r} is not in {self.zip_path}")
        return read_zip_member(self._zip, self._infos[member], str(self.zip_path))


def decode_image(blob: bytes, size: int | None, where: str = "an MMEB image") -> np.ndarray:
    """uint8 [H, W, 3]: as decoded (``size`` None), else [size, size, 3]: short side resized to
    ``size`` (bicubic), then centre-cropped."""
    with open_image(blob, where) as im:
        im = im.convert("RGB")
        w, h = im.size
        if size is not None and (w, h) != (size, size):
            s = size / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.array(im, dtype=np.uint8)


class PairItems:
    """Items that are a text, an image or both (MMEB queries / candidates): what
    ``ImageTextEncoder.embed_pairs`` embeds. ``texts[i]`` / ``paths[i]`` is "" for none. Images
    are decoded a batch at a time; the fingerprint covers the texts, the paths, the images'
    stamps (zip CRC-32 / file size and mtime) and the decode size."""

    def __init__(self, texts: list[str], paths: list[str], source: ImageSource, image_size: int | None,
                 stamps: dict[str, str], role: Literal["query", "candidate"] | None = None) -> None:
        if len(texts) != len(paths):
            raise ValueError(f"{len(texts)} texts but {len(paths)} image paths")
        self.texts, self.paths = list(texts), list(paths)
        self.source, self.image_size = source, image_size
        self.role = role  # which side of the retrieval the items are on (role-aware embedders prompt by it)
        marks = [f"{p}={stamps.get(p, '')}" if p else "" for p in self.paths]
        size_tag = "original" if image_size is None else image_size
        self.fingerprint = fingerprint_texts(self.texts + marks, f"cl_bench.mmeb.items.v1:{size_tag}:{role}")

    def __len__(self) -> int:
        return len(self.texts)

    def item(self, i: int) -> tuple[str, torch.Tensor | None]:
        """(text, image as float [3, H, W] in [0, 1] or None) of item ``i``."""
        if not self.paths[i]:
            return self.texts[i], None
        pix = decode_image(self.source.read(self.paths[i]), self.image_size, f"{self.paths[i]} ({self.source.where})")
        return self.texts[i], torch.from_numpy(pix).permute(2, 0, 1).float().div_(255.0)

    def batches(self, batch_size: int) -> Iterator[tuple[list[str], list[torch.Tensor | None]]]:
        """(texts, images as float [3, H, W] in [0, 1] or None) in order, ``batch_size`` at a time."""
        for start in range(0, len(self), batch_size):
            items = [self.item(i) for i in range(start, min(start + batch_size, len(self)))]
            yield [t for t, _ in items], [im for _, im in items]


@dataclass
class MMEBDataset:
    """One MMEB dataset: rows of a query (text and/or image) and candidates (answer first)."""

    name: str
    meta_task: str
    split: str  # IND | OOD
    qry_text: list[str]
    qry_img: list[str]
    tgt_text: list[list[str]]
    tgt_img: list[list[str]]
    source: ImageSource
    image_size: int | None  # None: images at their own size
    file_digest: str = ""
    _stamps: dict[str, str] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.qry_text)

    @property
    def fingerprint(self) -> str:
        parts = [self.name, self.meta_task, self.split, str(self.image_size), self.file_digest]
        parts += [f"{p}={self._stamps[p]}" for p in sorted(self._stamps)]
        return fingerprint_texts(parts, "cl_bench.mmeb.dataset.v1")

    def validate(self) -> None:
        """Check every row (candidate lists, images present) and record the images' stamps."""
        for i in range(len(self)):
            if len(self.tgt_text[i]) != len(self.tgt_img[i]):
                raise ClBenchError(
                    f"MMEB {self.name} row {i}: tgt_text has {len(self.tgt_text[i])} candidates but tgt_img_path "
                    f"has {len(self.tgt_img[i])}; the two lists must have the same length"
                )
            if not self.tgt_text[i]:
                raise ClBenchError(f"MMEB {self.name} row {i}: no candidates (tgt_text and tgt_img_path are empty)")
            for column, paths in (("qry_img_path", [self.qry_img[i]]), ("tgt_img_path", self.tgt_img[i])):
                for path in paths:
                    if not path or path in self._stamps:
                        continue
                    stamp = self.source.stamp(path)
                    if stamp is None:
                        raise ClBenchError(f"MMEB {self.name} row {i}: image {path!r} ({column}) is not in "
                                           f"{self.source.where}")
                    self._stamps[path] = stamp

    def items(self, side: Literal["qry", "tgt"]) -> list[tuple[str, str]]:
        """The unique (text, image path) items of one side, in first-seen order (VLM2Vec embeds
        each unique pair once and looks rows up by it)."""
        seen: dict[tuple[str, str], None] = {}
        if side == "qry":
            for t, p in zip(self.qry_text, self.qry_img):
                seen.setdefault((t, p), None)
        else:
            for ts, ps in zip(self.tgt_text, self.tgt_img):
                for t, p in zip(ts, ps):
                    seen.setdefault((t, p), None)
        return list(seen)

    def pair_items(self, side: Literal["qry", "tgt"]) -> tuple[PairItems, dict[tuple[str, str], int]]:
        """The unique items of one side as :class:`PairItems` and the row of each (text, path)."""
        items = self.items(side)
        # a matching dataset's candidates are items of the query's kind (text + image): queries too
        role = "query" if side == "qry" or "matching" in self.name.lower() else "candidate"
        pairs = PairItems([t for t, _ in items], [p for _, p in items], self.source, self.image_size, self._stamps,
                          role)
        return pairs, {it: k for k, it in enumerate(items)}

    def images(self, paths: list[str]) -> ImageList:
        """The images at ``paths`` (relative), decoded to ``image_size`` squares."""
        s = self.image_size
        if s is None:
            raise ClBenchError(f"MMEB {self.name}: images at their own size do not stack; iterate pair_items() instead")
        if not paths:
            return ImageList(np.zeros((0, s, s, 3), np.uint8))
        return ImageList(np.stack([decode_image(self.source.read(p), s, f"{p} ({self.source.where})") for p in paths]))


@dataclass
class MMEBData:
    """Several MMEB datasets, scored one by one (see :mod:`cl_bench.protocols.mmeb`)."""

    name: str
    datasets: list[MMEBDataset]
    arch_inputs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    train_ref: tuple[str, dict[str, Any]] | None = None
    _train: Any = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        return fingerprint_texts([self.name] + [d.fingerprint for d in self.datasets], "cl_bench.mmeb.v1")

    @property
    def train(self) -> Any:
        if self._train is None:
            self._train = training_split(self.name, self.train_ref)
        return self._train




class MMEBRow(BaseModel):
    """One row as the parquet holds it: strict types, image paths inside the image folder."""

    model_config = ConfigDict(strict=True, extra="ignore")
    qry_text: str | None
    qry_img_path: OptionalRelPath | None
    tgt_text: list[str | None] | str | None
    tgt_img_path: list[OptionalRelPath | None] | OptionalRelPath | None


def _parquet_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("test-*.parquet")) or sorted((folder / "test").glob("*.parquet"))
    return files


def _read_rows(files: list[Path], dataset: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for path in files:
        try:
            rows += pq.read_table(path, columns=["qry_text", "qry_img_path", "tgt_text", "tgt_img_path"]).to_pylist()
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise ClBenchError(f"MMEB {dataset}: cannot read {path} ({str(e).splitlines()[0]})") from None
    return rows


def _as_list(value: Any, n: int) -> list[str]:
    if value is None or (isinstance(value, str) and value == ""):
        return [""] * n
    if isinstance(value, str):
        return [value]
    return ["" if v is None else str(v) for v in value]


def read_mmeb_dataset(root: Path, name: str, meta_task: str, split: str, source: ImageSource,
                      image_size: int | None, layout: str) -> MMEBDataset:
    folder = root / name
    files = _parquet_files(folder)
    if not files:
        raise ClBenchError(f"MMEB dataset {name}: no test-*.parquet (or test/*.parquet) under {folder}; {layout}")
    rows = _read_rows(files, name)
    if not rows:
        raise ClBenchError(f"MMEB dataset {name}: {files[0]} has no rows")
    for i, row in enumerate(rows):
        validate_params(MMEBRow, row, f"MMEB dataset {name} ({files[0].parent}) row {i}")
    digest = hashlib.sha256()
    for f in files:
        digest.update(read_bytes(f, MAX_DATA_TEXT_BYTES, "parquet file"))
    tgt_img = [_as_list(r["tgt_img_path"], 0) for r in rows]
    tgt_text = [_as_list(r["tgt_text"], len(ti)) for r, ti in zip(rows, tgt_img)]
    ds = MMEBDataset(
        name, meta_task, split,
        qry_text=[r["qry_text"] or "" for r in rows], qry_img=[r["qry_img_path"] or "" for r in rows],
        tgt_text=tgt_text, tgt_img=tgt_img, source=source, image_size=image_size, file_digest=digest.hexdigest(),
    )
    ds.validate()
    return ds


def image_source(root: Path, image_dir: str, zip_name: str = "images.zip") -> ImageSource | None:
    """The unpacked image folder if present, else ``images.zip``, else None."""
    if (root / image_dir).is_dir():
        return ImageSource(folder=root / image_dir)
    if (root / zip_name).is_file():
        return ImageSource(zip_path=root / zip_name)
    return None


def read_mmeb_tree(root: Path, table: dict[str, tuple[str, str]], *, name: str, image_size: int | None,
                   image_dir: str = "eval_images", layout: str = "", meta: dict[str, Any] | None = None,
                   train_ref: tuple[str, dict[str, Any]] | None = None) -> MMEBData:
    """Read the datasets of ``table`` (name -> (meta-task, IND|OOD)) from an MMEB-eval tree."""
    layout = layout or LAYOUT.format(root=root.name, image_dir=image_dir)
    source = image_source(root, image_dir)
    missing = [n for n in table if not (root / n).is_dir()]
    if missing:
        raise ClBenchError(f"MMEB: {len(missing)} dataset folder(s) missing under {root} "
                           f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); {layout}")
    if source is None:
        source = ImageSource(folder=root / image_dir)  # rows naming images then fail with row + path
    datasets = [read_mmeb_dataset(root, n, mt, sp, source, image_size, layout) for n, (mt, sp) in table.items()]
    sized = {} if image_size is None else {"image_size": (image_size, image_size)}
    return MMEBData(name, datasets, arch_inputs={"in_channels": 3, **sized},
                    meta={"root": str(root), "images": source.where, "n_datasets": len(datasets), **(meta or {})},
                    train_ref=train_ref)


class MMEBParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str = "MMEB-eval"
    datasets: Literal["all"] | list[str] = "all"
    image_dir: str = "eval_images"
    # None (default): the model's processor gets each image at its own size, as VLM2Vec's eval;
    # an integer: short side resized to it and centre-cropped first (version 1 of task mmeb: 336)
    image_size: int | None = Field(default=None, ge=8, le=2048)


@register("dataset", "mmeb")
def load_mmeb(params: dict[str, Any] | None, data_root: Path | None) -> MMEBData:
    """MMEB-eval: the 36 datasets (or the ``datasets`` named) with their meta-task and IND/OOD split."""
    p = validate_params(MMEBParams, params, "dataset 'mmeb' params")
    layout = LAYOUT.format(root=p.root, image_dir=p.image_dir)
    if data_root is None:
        raise ClBenchError(f"dataset 'mmeb' needs real data: pass --data-root (or set CLBENCH_DATA); {layout}")
    names = list(MMEB_DATASETS) if p.datasets == "all" else list(p.datasets)
    for n in names:
        if n not in MMEB_DATASETS:
            raise ClBenchError(f"dataset 'mmeb' params: unknown MMEB dataset {n!r}{did_you_mean(n, MMEB_DATASETS)}")
    root = Path(data_root) / p.root
    if not root.is_dir():
        raise ClBenchError(f"{root} is missing; {layout}")
    return read_mmeb_tree(root, {n: MMEB_DATASETS[n] for n in names}, name="mmeb", image_size=p.image_size,
                          image_dir=p.image_dir, layout=layout)
