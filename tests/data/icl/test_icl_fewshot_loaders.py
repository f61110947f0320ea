"""fewshot-text loaders on fixtures written in the real layouts: Hugging Face save_to_disk (SST-2),
GLUE TSV and SuperGLUE JSONL (RTE), the original AG News CSV, the original TREC .label files;
and one-line errors for a missing folder, a label outside the label values, a missing field."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cl_bench.data.icl.fewshot_text import load_fewshot_text
from cl_bench.errors import ClBenchError


def one_line_error(params: dict, root: Path | None) -> str:
    with pytest.raises(ClBenchError) as e:
        load_fewshot_text(params, root)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_sst2_hf_save_to_disk(tmp_path: Path) -> None:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    feats = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"]), "idx": Value("int32")})
    dd = DatasetDict({
        "train": Dataset.from_dict({"sentence": ["a gorgeous film ", "dull", "fun"], "label": [1, 0, 1], "idx": [0, 1, 2]}, features=feats),
        "validation": Dataset.from_dict({"sentence": ["it 's a charming journey"], "label": [1], "idx": [0]}, features=feats),
        "test": Dataset.from_dict({"sentence": ["unlabelled"], "label": [-1], "idx": [0]}, features=feats),
    })
    dd.save_to_disk(str(tmp_path / "sst2"))
    data = load_fewshot_text({"preset": "sst2"}, tmp_path)
    assert data.meta["layout"] == "hf-disk"
    assert [(e.text, e.label) for e in data.train.examples] == [("a gorgeous film", 1), ("dull", 0), ("fun", 1)]
    assert data.label_words == ["Negative", "Positive"]
    assert data.query_text(data.test.examples[0]) == "Review: it 's a charming journey\nSentiment:"
    assert data.continuation(1) == " Positive"
    # reading the unlabelled GLUE test split is refused with the offending label named
    msg = one_line_error({"preset": "sst2", "test_split": "test"}, tmp_path)
    assert "-1" in msg


def test_rte_glue_tsv_and_superglue_jsonl(tmp_path: Path) -> None:
    folder = tmp_path / "rte" / "RTE"
    folder.mkdir(parents=True)
    rows = [("0", 'He said "no".', "He spoke.", "entailment"), ("1", "A cat sat.", "A dog sat.", "not_entailment")]
    for name in ("train.tsv", "dev.tsv"):
        with (folder / name).open("w", newline="") as fh:
            fh.write("index\tsentence1\tsentence2\tlabel\n")
            for r in rows:
                fh.write("\t".join(r) + "\n")
    data = load_fewshot_text({"preset": "rte"}, tmp_path)
    assert data.meta["layout"] == "tsv"
    ex = data.train.examples[0]
    assert (ex.text, ex.text_b, ex.label) == ('He said "no".', "He spoke.", 0)
    assert data.label_words[ex.label] == "True" and data.train.examples[1].label == 1
    assert data.query_text(ex) == 'He said "no".\nquestion: He spoke. True or False?\nanswer:'

    sg = tmp_path / "sg" / "rte"
    sg.mkdir(parents=True)
    for name in ("train.jsonl", "val.jsonl"):
        (sg / name).write_text("\n".join(json.dumps({"premise": p, "hypothesis": h, "label": lab, "idx": int(i)})
                                         for i, p, h, lab in rows) + "\n")
    data = load_fewshot_text({"preset": "rte"}, tmp_path / "sg")
    assert data.meta["layout"] == "jsonl" and [e.label for e in data.test.examples] == [0, 1]


def test_agnews_original_csv(tmp_path: Path) -> None:
    folder = tmp_path / "ag_news"
    folder.mkdir()
    rows = [["3", "Wall St. Bears Claw Back", "Short-sellers are seeing green."],
            ["2", "Phelps wins", "Gold again, in the pool."], ["4", "New chip", "Faster, smaller."]]
    for name in ("train.csv", "test.csv"):
        with (folder / name).open("w", newline="") as fh:
            csv.writer(fh, quoting=csv.QUOTE_ALL).writerows(rows)
    data = load_fewshot_text({"preset": "agnews"}, tmp_path)
    assert [e.label for e in data.train.examples] == [2, 1, 3]
    assert data.train.examples[1].text == "Phelps wins Gold again, in the pool."
    assert data.label_words[2] == "Business"
    assert data.format.instruction.startswith("Classify the news articles")
    assert data.query_text(data.train.examples[0]).endswith("\nAnswer:")


def test_trec_original_label_files(tmp_path: Path) -> None:
    folder = tmp_path / "trec"
    folder.mkdir()
    (folder / "train_5500.label").write_bytes(b"NUM:dist How far is it from Denver to Aspen ?\nHUM:ind Who was Gal\xe9 ?\n")
    (folder / "TREC_10.label").write_bytes(b"ABBR:exp What does NASA stand for ?\n")
    data = load_fewshot_text({"preset": "trec"}, tmp_path)
    assert data.meta["layout"] == "trec-label"
    assert [e.label for e in data.train.examples] == [5, 3]
    assert data.train.examples[1].text == "Who was Galé ?"
    assert data.label_words[data.test.examples[0].label] == "Abbreviation"


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    assert "--data-root" in one_line_error({"preset": "sst2"}, None)
    assert "does not exist" in one_line_error({"preset": "sst2"}, tmp_path)
    (tmp_path / "sst2").mkdir()
    assert "dataset_dict.json" in one_line_error({"preset": "sst2"}, tmp_path)
    (tmp_path / "sst2" / "train.jsonl").write_text('{"sentence": "fine", "label": 7}\n')
    (tmp_path / "sst2" / "validation.jsonl").write_text('{"sentence": "ok", "label": 1}\n')
    assert "label 7" in one_line_error({"preset": "sst2"}, tmp_path)
    (tmp_path / "sst2" / "train.jsonl").write_text('{"text": "fine", "label": 1}\n')
    assert "'sentence'" in one_line_error({"preset": "sst2"}, tmp_path)
    (tmp_path / "sst2" / "train.jsonl").write_text("not json\n")
    assert "JSON" in one_line_error({"preset": "sst2"}, tmp_path)
    assert "preset" in one_line_error({}, tmp_path)
