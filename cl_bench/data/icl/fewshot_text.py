"""Text classification data for few-shot in-context learning, read from real on-disk layouts.

A ``FewShotTextData`` holds a ``train`` pool (where demonstrations come from), a labelled
``test`` split, the label words (one per class, scored after the prompt) and the prompt format.
Layouts under ``DATA_ROOT/<folder>/`` (``layout: auto`` takes the first present, in this order):

- ``hf-disk``: a Hugging Face ``DatasetDict.save_to_disk`` folder (``dataset_dict.json`` +
  one folder per split), read with ``datasets.load_from_disk``;
- ``jsonl`` / ``csv`` / ``tsv``: one file per split (``train_files`` / ``test_files`` give the
  candidate names, the first present is read), one record per line / row (``columns`` names
  the fields of header-less CSVs such as the original AG News ``train.csv``);
- ``trec-label``: the original TREC files (``train_5500.label``, ``TREC_10.label``): lines
  ``COARSE:fine question``, latin-1.

Raw labels are mapped to class indices through ``label_values`` (raw value of class 0, 1, ...);
a raw label outside it is an error naming the file. Presets (``preset: sst2|agnews|trec|rte``)
fill the folder, file names, fields, label values, label words and the prompt format of
Zhao et al. 2021 ("Calibrate Before Use", arXiv 2102.09690), the standard few-shot ICL formats:

| preset | input | label words (class 0, 1, ...) |
| --- | --- | --- |
| sst2 | ``Review: {sentence}\\nSentiment:`` | Negative, Positive |
| agnews | instruction + ``Article: {text}\\nAnswer:`` | World, Sports, Business, Technology |
| trec | instruction + ``Question: {text}\\nAnswer Type:`` | Abbreviation, Entity, Description, Person, Location, Number (HF coarse_label order) |
| rte | ``{premise}\\nquestion: {hypothesis} True or False?\\nanswer:`` | True (entailment), False |
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from cl_bench.bounded_io import MAX_DATA_TEXT_BYTES, loads_json, read_bytes, read_text
from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.specs import Strict, validate_params


class PromptFormat(Strict):
    """How one example becomes text: ``instruction`` once, then demonstrations and the query.

    query  = input_prefix + text [+ pair_separator + text_b + pair_suffix] + output_prefix
    demo   = query + target_delimiter + label_word
    prompt = instruction + (demo + example_separator) * k + query;   continuation = target_delimiter + label_word
    """

    instruction: str = ""
    input_prefix: str = "Input: "
    pair_separator: str = "\n"
    pair_suffix: str = ""
    output_prefix: str = "\nLabel:"
    target_delimiter: str = " "
    example_separator: str = "\n\n"


@dataclass(frozen=True)
class FewShotExample:
    text: str
    label: int
    text_b: str | None = None

    def key(self) -> tuple[str, str | None]:
        """What makes two examples "the same" for the no-overlap rule."""
        return (self.text.strip(), None if self.text_b is None else self.text_b.strip())


@dataclass
class FewShotSplit:
    examples: list[FewShotExample]
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            h = hashlib.sha256(b"cl_bench.fewshot_split.v1\0")
            for e in self.examples:
                h.update(json.dumps([e.text, e.text_b, e.label]).encode("utf-8", "surrogatepass"))
            self.fingerprint = h.hexdigest()

    def __len__(self) -> int:
        return len(self.examples)


@dataclass
class FewShotTextData:
    name: str
    train: FewShotSplit
    test: FewShotSplit
    label_words: list[str]
    format: PromptFormat
    meta: dict[str, Any] = field(default_factory=dict)
    arch_inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_words)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(b"cl_bench.fewshot_text.v1\0")
        for part in (self.train.fingerprint, self.test.fingerprint, json.dumps(self.label_words),
                     self.format.model_dump_json()):
            h.update(part.encode() + b"\0")
        return h.hexdigest()

    def query_text(self, ex: FewShotExample) -> str:
        f = self.format
        body = ex.text if ex.text_b is None else ex.text + f.pair_separator + ex.text_b + f.pair_suffix
        return f.input_prefix + body + f.output_prefix

    def continuation(self, label: int) -> str:
        return self.format.target_delimiter + self.label_words[label]

    def demo_text(self, ex: FewShotExample) -> str:
        return self.query_text(ex) + self.continuation(ex.label)


def check_labels(examples: list[FewShotExample], n_classes: int, where: str) -> None:
    for e in examples:
        if not 0 <= e.label < n_classes:
            raise ClBenchError(f"{where}: label {e.label} has no label word ({n_classes} label words)")


# --- real layouts ------------------------------------------------------------------------------

Layout = Literal["auto", "hf-disk", "jsonl", "csv", "tsv", "trec-label"]


class FewShotTextParams(Strict):
    preset: Literal["sst2", "agnews", "trec", "rte", "none"] = "none"
    folder: str | None = None  # under the data root
    layout: Layout = "auto"
    train_split: str | None = None  # hf-disk split names
    test_split: str | None = None
    train_files: list[str] | None = None
    test_files: list[str] | None = None
    columns: list[str] | None = None  # header-less CSV/TSV
    text_field: str | None = None
    text_fields: list[str] | None = None  # joined with join_with (AG News title + description)
    join_with: str = " "
    text_b_field: str | None = None
    label_field: str | None = None
    label_values: list[Any] | None = None
    label_words: list[str] | None = None
    format: PromptFormat | None = None
    max_train: int | None = Field(default=None, ge=1)  # keep the first N (after a fixed shuffle)
    max_test: int | None = Field(default=None, ge=1)


_AG_INSTRUCTION = "Classify the news articles into the categories of World, Sports, Business, and Technology.\n\n"
_TREC_INSTRUCTION = (
    "Classify the questions based on whether their answer type is a Number, Location, Person, "
    "Description, Entity, or Abbreviation.\n\n"
)
PRESETS: dict[str, dict[str, Any]] = {
    "sst2": {
        "folder": "sst2", "train_split": "train", "test_split": "validation",
        "train_files": ["train.jsonl", "train.tsv", "SST-2/train.tsv"],
        "test_files": ["validation.jsonl", "dev.tsv", "SST-2/dev.tsv"],
        "text_field": "sentence", "label_field": "label", "label_values": [0, 1],
        "label_words": ["Negative", "Positive"],
        "format": PromptFormat(input_prefix="Review: ", output_prefix="\nSentiment:"),
    },
    "agnews": {
        "folder": "ag_news", "train_split": "train", "test_split": "test",
        "train_files": ["train.jsonl", "train.csv"], "test_files": ["test.jsonl", "test.csv"],
        "text_field": "text", "label_field": "label", "label_values": [0, 1, 2, 3],
        "label_words": ["World", "Sports", "Business", "Technology"],
        "format": PromptFormat(instruction=_AG_INSTRUCTION, input_prefix="Article: ", output_prefix="\nAnswer:"),
    },
    "trec": {
        "folder": "trec", "train_split": "train", "test_split": "test",
        "train_files": ["train.jsonl", "train_5500.label"], "test_files": ["test.jsonl", "TREC_10.label"],
        "text_field": "text", "label_field": "coarse_label", "label_values": [0, 1, 2, 3, 4, 5],
        "label_words": ["Abbreviation", "Entity", "Description", "Person", "Location", "Number"],
        "format": PromptFormat(instruction=_TREC_INSTRUCTION, input_prefix="Question: ", output_prefix="\nAnswer Type:"),
    },
    "rte": {
        "folder": "rte", "train_split": "train", "test_split": "validation",
        "train_files": ["train.jsonl", "train.tsv", "RTE/train.jsonl", "RTE/train.tsv"],
        "test_files": ["validation.jsonl", "val.jsonl", "dev.tsv", "RTE/val.jsonl", "RTE/dev.tsv"],
        "text_field": "sentence1", "text_b_field": "sentence2", "label_field": "label", "label_values": [0, 1],
        "label_words": ["True", "False"],
        "format": PromptFormat(input_prefix="", pair_separator="\nquestion: ", pair_suffix=" True or False?",
                               output_prefix="\nanswer:"),
    },
}
# Files whose raw labels/fields differ from the Hugging Face columns: (suffix, preset) -> overrides.
_FILE_OVERRIDES: dict[tuple[str, str], dict[str, Any]] = {
    ("csv", "agnews"): {"columns": ["label", "title", "description"], "text_fields": ["title", "description"],
                        "label_values": [1, 2, 3, 4]},
    ("tsv", "rte"): {"label_values": ["entailment", "not_entailment"]},
    ("jsonl", "rte"): {"text_field": "premise", "text_b_field": "hypothesis",  # SuperGLUE RTE/*.jsonl
                       "label_values": ["entailment", "not_entailment"]},
    ("trec-label", "trec"): {"label_values": ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]},
}


def resolve_params(p: FewShotTextParams) -> FewShotTextParams:
    """The preset's values under the explicitly given ones."""
    base = dict(PRESETS.get(p.preset, {}))
    given = p.model_dump(exclude_unset=True)
    base.update({k: v for k, v in given.items() if k != "format"})
    if "format" in given:
        base["format"] = p.format
    return FewShotTextParams(**base)


def _find_layout(folder: Path, p: FewShotTextParams) -> tuple[str, Path | None, Path | None]:
    if p.layout in ("auto", "hf-disk") and (folder / "dataset_dict.json").is_file():
        return "hf-disk", None, None
    if p.layout == "hf-disk":
        raise ClBenchError(f"{folder} is not a Hugging Face save_to_disk folder (no dataset_dict.json)")
    for name in p.train_files or []:
        train = folder / name
        if train.is_file():
            test = next((folder / t for t in p.test_files or [] if (folder / t).is_file()), None)
            if test is None:
                raise ClBenchError(f"{folder}: found {name} but none of the test files {p.test_files}")
            suffix = train.suffix.lstrip(".")
            layout = "trec-label" if suffix == "label" else suffix
            if p.layout not in ("auto", layout):
                continue
            return layout, train, test
    raise ClBenchError(
        f"no few-shot data under {folder}: expected a Hugging Face save_to_disk folder (dataset_dict.json) "
        f"or one of {p.train_files} with {p.test_files}; pass --data-root"
    )


def _records_from_file(path: Path, layout: str, p: FewShotTextParams) -> list[dict[str, Any]]:
    if layout == "jsonl":
        out = []
        for i, line in enumerate(read_text(path, MAX_DATA_TEXT_BYTES, "JSON-lines file").splitlines()):
            if line.strip():
                record = loads_json(line, f"{path}:{i + 1}")
                if not isinstance(record, dict):
                    raise ClBenchError(f"{path}:{i + 1} is not a JSON object")
                out.append(record)
        return out
    if layout == "trec-label":
        rows = []
        for line in read_bytes(path, MAX_DATA_TEXT_BYTES, "TREC file").decode("latin-1").splitlines():
            if line.strip():
                head, _, question = line.partition(" ")
                rows.append({"coarse_label": head.split(":")[0], "text": question.strip()})
        return rows
    delimiter = "\t" if layout == "tsv" else ","
    with io.StringIO(read_text(path, MAX_DATA_TEXT_BYTES, f"{layout} file"), newline="") as fh:
        if p.columns:
            reader: Any = csv.reader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE if layout == "tsv" else csv.QUOTE_MINIMAL)
            return [dict(zip(p.columns, row)) for row in reader if row]
        quoting = csv.QUOTE_NONE if layout == "tsv" else csv.QUOTE_MINIMAL
        return list(csv.DictReader(fh, delimiter=delimiter, quoting=quoting))


def _coerce(value: Any, values: list[Any]) -> Any:
    """Match a raw label against ``values`` (CSV gives strings for numeric labels)."""
    if value in values:
        return value
    for v in values:
        if str(v) == str(value).strip():
            return v
    return value


def records_to_examples(records: list[dict[str, Any]], p: FewShotTextParams, where: str) -> list[FewShotExample]:
    values = p.label_values or list(range(len(p.label_words or [])))
    fields = p.text_fields or ([p.text_field] if p.text_field else [])
    if not fields or not p.label_field:
        raise ClBenchError(f"{where}: set text_field (or text_fields) and label_field")
    out = []
    for i, r in enumerate(records):
        missing = [f for f in fields + [p.label_field] + ([p.text_b_field] if p.text_b_field else []) if f not in r]
        if missing:
            raise ClBenchError(f"{where}: record {i} has no field {missing[0]!r} (fields: {', '.join(map(str, r))})")
        raw = _coerce(r[p.label_field], values)
        if raw not in values:
            raise ClBenchError(f"{where}: record {i} has label {r[p.label_field]!r}, not one of the label values {values}")
        text = p.join_with.join(str(r[f]).strip() for f in fields)
        text_b = str(r[p.text_b_field]).strip() if p.text_b_field else None
        out.append(FewShotExample(text=text, label=values.index(raw), text_b=text_b))
    return out


def _subsample(examples: list[FewShotExample], n: int | None) -> list[FewShotExample]:
    if n is None or n >= len(examples):
        return examples
    import numpy as np

    keep = np.sort(np.random.default_rng(0).permutation(len(examples))[:n])
    return [examples[i] for i in keep]


def load_examples(folder: Path, p: FewShotTextParams) -> tuple[list[FewShotExample], list[FewShotExample], str]:
    layout, train_path, test_path = _find_layout(folder, p)
    if layout == "hf-disk":
        from datasets import load_from_disk

        dd = load_from_disk(str(folder))
        for split in (p.train_split, p.test_split):
            if split not in dd:
                raise ClBenchError(f"{folder}: no split {split!r} (has {', '.join(dd)})")
        train = records_to_examples(list(dd[p.train_split]), p, f"{folder}[{p.train_split}]")
        test = records_to_examples(list(dd[p.test_split]), p, f"{folder}[{p.test_split}]")
        return train, test, "hf-disk"
    assert train_path is not None and test_path is not None
    q = p.model_copy(update=_FILE_OVERRIDES.get((layout, p.preset), {}))
    return (records_to_examples(_records_from_file(train_path, layout, q), q, str(train_path)),
            records_to_examples(_records_from_file(test_path, layout, q), q, str(test_path)), layout)


@register("dataset", "fewshot-text")
def load_fewshot_text(params: dict[str, Any], data_root: Path | None = None) -> FewShotTextData:
    p = resolve_params(validate_params(FewShotTextParams, params, "dataset fewshot-text params"))
    if not p.folder or not p.label_words:
        raise ClBenchError("dataset fewshot-text: set a preset (sst2, agnews, trec, rte) or folder + label_words")
    if data_root is None:
        raise ClBenchError(f"dataset fewshot-text ({p.preset}) reads DATA_ROOT/{p.folder}/: pass --data-root or set CLBENCH_DATA")
    folder = Path(data_root) / p.folder
    if not folder.is_dir():
        raise ClBenchError(f"{folder} does not exist: expected the {p.preset} data there (see cl_bench/data/icl/fewshot_text.py)")
    train, test, layout = load_examples(folder, p)
    if not train or not test:
        raise ClBenchError(f"{folder}: the train or test split is empty")
    return FewShotTextData(
        name=f"fewshot-{p.preset}", train=FewShotSplit(_subsample(train, p.max_train)),
        test=FewShotSplit(_subsample(test, p.max_test)), label_words=list(p.label_words),
        format=p.format or PromptFormat(), meta={"layout": layout, "folder": str(folder), "preset": p.preset},
    )
