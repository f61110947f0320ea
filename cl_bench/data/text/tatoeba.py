"""Tatoeba bitext (dataset ``tatoeba``) in its two published layouts.

Under ``DIR/tatoeba/`` (``DIR`` = ``--data-root`` / ``CLBENCH_DATA``, or the ``path`` param):

- LASER (facebookresearch/LASER ``data/tatoeba/v1``): ``tatoeba.xxx-eng.xxx`` and
  ``tatoeba.xxx-eng.eng``, UTF-8, one sentence per line, line i of one file translating line i
  of the other. Source = the ``xxx`` side, target = English.
- MTEB's Hugging Face copy (``mteb/tatoeba-bitext-mining``): a folder ``xxx-eng/`` holding the
  test split as parquet (``test/0000.parquet`` or ``*test*.parquet``) or JSON lines
  (``test.jsonl[.gz]``) with columns ``sentence1`` (the ``xxx`` side) and ``sentence2`` (English).

``pairs`` is a list (``[deu-eng, fra]`` — ``-eng`` is implied) or ``all`` (every pair present).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cl_bench.bounded_io import MAX_DATA_TEXT_BYTES, decode_utf8, gunzip, loads_json, read_bytes, read_text
from cl_bench.components import register
from cl_bench.data.text.types import BitextData, BitextPair, TextSplit
from cl_bench.errors import ClBenchError
from cl_bench.specs import validate_params

LAYOUT = (
    "DIR/tatoeba/tatoeba.xxx-eng.xxx + tatoeba.xxx-eng.eng (LASER), or DIR/tatoeba/xxx-eng/ with the "
    "test split as parquet/jsonl columns sentence1, sentence2 (MTEB)"
)
_PAIR = re.compile(r"^[a-z]{2,3}(-eng)?$")
_LASER_FILE = re.compile(r"^tatoeba\.([a-z]{2,3})-eng\.\1$")


class TatoebaParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pairs: list[str] | Literal["all"] = "all"
    layout: Literal["auto", "laser", "mteb"] = "auto"
    path: str | None = None  # a tatoeba folder (relative paths: to the project root); else DIR/tatoeba
    limit: int | None = Field(default=None, ge=1)  # first N pairs of sentences per language pair


class BitextRow(BaseModel):
    """One MTEB row: the two sentences as strings (other columns, e.g. ``id``, are ignored)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    sentence1: str
    sentence2: str


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 file split on "\\n" only (Unicode line separators inside a sentence stay)."""
    text = read_text(path, MAX_DATA_TEXT_BYTES, "Tatoeba file")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def load_laser_pair(folder: Path, lang: str) -> BitextPair:
    src_path = folder / f"tatoeba.{lang}-eng.{lang}"
    tgt_path = folder / f"tatoeba.{lang}-eng.eng"
    for p in (src_path, tgt_path):
        if not p.is_file():
            raise ClBenchError(f"missing {p}; expected {LAYOUT}")
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if not src or not tgt:
        empty = src_path if not src else tgt_path
        raise ClBenchError(f"{empty} is empty; each Tatoeba file holds one sentence per line")
    if len(src) != len(tgt):
        raise ClBenchError(
            f"Tatoeba pair {lang}-eng is misaligned: {src_path.name} has {len(src)} lines but "
            f"{tgt_path.name} has {len(tgt)}; the two files must be line-aligned"
        )
    return BitextPair(f"{lang}-eng", TextSplit(src), TextSplit(tgt),
                      meta={"layout": "laser", "files": [str(src_path), str(tgt_path)]})


def _mteb_files(pair_dir: Path) -> list[Path]:
    found = [
        p for p in sorted(pair_dir.rglob("*"))
        if p.is_file() and p.name.endswith((".parquet", ".jsonl", ".jsonl.gz", ".json"))
        and "test" in p.relative_to(pair_dir).as_posix()
    ]
    return found


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ClBenchError("reading MTEB's parquet files needs pyarrow: pip install pyarrow") from None
        try:
            return pq.read_table(path, columns=["sentence1", "sentence2"]).to_pylist()
        except (OSError, ValueError, KeyError) as e:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
            raise ClBenchError(f"{path}: cannot read columns sentence1, sentence2 ({str(e).splitlines()[0]})") from None
    blob = (gunzip(path, MAX_DATA_TEXT_BYTES, "JSON-lines file") if path.name.endswith(".gz")
            else read_bytes(path, MAX_DATA_TEXT_BYTES, "JSON-lines file"))
    text = decode_utf8(blob, str(path))
    lines = enumerate(text.split("\n"), 1)
    return [loads_json(line, f"{path} line {n}") for n, line in lines if line.strip()]


def load_mteb_pair(folder: Path, lang: str) -> BitextPair:
    pair_dir = folder / f"{lang}-eng"
    files = _mteb_files(pair_dir) if pair_dir.is_dir() else []
    if not files:
        raise ClBenchError(f"no test split under {pair_dir}; expected {LAYOUT}")
    src: list[str] = []
    tgt: list[str] = []
    for path in files:
        for i, row in enumerate(_read_rows(path)):
            r = validate_params(BitextRow, row if isinstance(row, dict) else {"row": row}, f"{path} row {i}")
            s1, s2 = r.sentence1, r.sentence2
            src.append(s1)
            tgt.append(s2)
    if not src:
        raise ClBenchError(f"{pair_dir}: the test split has no rows")
    return BitextPair(f"{lang}-eng", TextSplit(src), TextSplit(tgt),
                      meta={"layout": "mteb", "files": [str(p) for p in files]})


def present_pairs(folder: Path) -> list[str]:
    """Languages with a pair in either layout under ``folder`` (sorted)."""
    langs = set()
    for p in folder.iterdir():
        m = _LASER_FILE.match(p.name)
        if m and p.is_file():
            langs.add(m.group(1))
        elif p.is_dir() and re.fullmatch(r"[a-z]{2,3}-eng", p.name) and _mteb_files(p):
            langs.add(p.name[:-4])
    return sorted(langs)


def tatoeba_folder(path: str | None, data_root: Path | None) -> Path:
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_absolute():
            from cl_bench.registry import PROJECT_ROOT

            folder = PROJECT_ROOT / folder
    elif data_root is not None:
        folder = Path(data_root) / "tatoeba"
    else:
        raise ClBenchError(f"Tatoeba needs real data: pass --data-root DIR (or set CLBENCH_DATA) with {LAYOUT}")
    if not folder.is_dir():
        raise ClBenchError(f"{folder} does not exist; expected {LAYOUT}")
    return folder


def _lang_of(pair: str) -> str:
    if not _PAIR.match(pair):
        raise ClBenchError(f"Tatoeba pair '{pair}' is not of the form xxx-eng (ISO 639-3, e.g. deu-eng)")
    return pair.removesuffix("-eng")


def _load_pair(folder: Path, lang: str, layout: str) -> BitextPair:
    if layout == "laser":
        return load_laser_pair(folder, lang)
    if layout == "mteb":
        return load_mteb_pair(folder, lang)
    if (folder / f"tatoeba.{lang}-eng.{lang}").exists() or (folder / f"tatoeba.{lang}-eng.eng").exists():
        return load_laser_pair(folder, lang)
    if (folder / f"{lang}-eng").is_dir():
        return load_mteb_pair(folder, lang)
    raise ClBenchError(f"Tatoeba pair {lang}-eng not found under {folder}; expected {LAYOUT}")


def _truncate(pair: BitextPair, limit: int | None) -> BitextPair:
    if limit is None or len(pair.source) <= limit:
        return pair
    return BitextPair(pair.name, TextSplit(pair.source.texts[:limit]), TextSplit(pair.target.texts[:limit]),
                      meta={**pair.meta, "limit": limit})


@register("dataset", "tatoeba")
def load_tatoeba(params: dict[str, Any], data_root: Path | None) -> BitextData:
    p = validate_params(TatoebaParams, params, "dataset tatoeba params")
    folder = tatoeba_folder(p.path, data_root)
    if p.pairs == "all":
        langs = present_pairs(folder)
        if not langs:
            raise ClBenchError(f"no Tatoeba pairs under {folder}; expected {LAYOUT}")
    else:
        if not p.pairs:
            raise ClBenchError("dataset tatoeba: 'pairs' is empty; list pairs like [deu-eng] or say all")
        langs = [_lang_of(x) for x in p.pairs]
        if len(set(langs)) != len(langs):
            raise ClBenchError(f"dataset tatoeba: a pair is listed twice in {p.pairs}")
    pairs = [_truncate(_load_pair(folder, lang, p.layout), p.limit) for lang in langs]
    return BitextData("tatoeba", pairs, meta={"folder": str(folder), "pairs": [x.name for x in pairs]})
