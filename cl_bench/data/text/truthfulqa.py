"""TruthfulQA multiple-choice data, read from its real on-disk layouts under ``DATA_ROOT/truthfulqa/``.

Layouts (``source: auto`` takes the first present, in this order):

- ``hf_parquet``: the Hugging Face ``truthful_qa`` ``multiple_choice`` config:
  ``multiple_choice/validation-*.parquet`` with ``question``, ``mc1_targets`` and
  ``mc2_targets`` as ``{choices: [...], labels: [...]}`` — the 817 questions
  lm-evaluation-harness reads, so it is preferred when both layouts are present;
- ``mc_json``: the official ``data/mc_task.json`` (sylinrl/TruthfulQA): a list of
  ``{question, mc1_targets: {answer: 0|1}, mc2_targets: {...}}``;
- ``csv``: the official ``TruthfulQA.csv`` (MC1 = Best Answer against the Incorrect Answers;
  MC2 = Correct Answers against Incorrect Answers, "; "-separated) — only when asked for.

The revision is recorded: the official files were revised in January 2025 (790 questions);
the Hugging Face copy keeps the original 817.

Empty answer strings (39 in the 2025 ``mc_task.json``: 17 in MC1 lists, 22 in MC2 lists):
``empty_choices: keep`` (default) keeps them, as lm-evaluation-harness does (the continuation
scored is then ``" "``); ``drop`` removes them and counts what it removed per list
(``meta["empty_choices_dropped"] = {"mc1": n1, "mc2": n2}``); ``error`` refuses the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from cl_bench.bounded_io import MAX_DATA_TEXT_BYTES, read_bytes, read_text
from cl_bench.components import register
from cl_bench.errors import ClBenchError
from cl_bench.specs import Strict, describe_validation_error, validate_params

LAYOUT_HINT = (
    "expected DATA_ROOT/truthfulqa/data/mc_task.json (official repo) or "
    "DATA_ROOT/truthfulqa/multiple_choice/validation-*.parquet (Hugging Face truthful_qa); pass --data-root"
)


@dataclass(frozen=True)
class MCTargets:
    choices: tuple[str, ...]
    labels: tuple[int, ...]
    n_dropped: int = field(default=0, compare=False)  # empty choices removed (empty_choices: drop)


@dataclass(frozen=True)
class MCQuestion:
    question: str
    mc1: MCTargets
    mc2: MCTargets


@dataclass
class MultipleChoiceData:
    """A list of multiple-choice questions (TruthfulQA)."""

    name: str
    questions: list[MCQuestion]
    revision: str
    source: str  # the file read
    file_sha256: str
    meta: dict[str, Any] = field(default_factory=dict)
    arch_inputs: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256(b"cl_bench.multiple_choice.v1\0")
        for q in self.questions:
            h.update(json.dumps([q.question, q.mc1.choices, q.mc1.labels, q.mc2.choices, q.mc2.labels]).encode())
        return h.hexdigest()

    @property
    def train(self) -> Any:
        raise ClBenchError("TruthfulQA has no training split: the method's recipe must name its own train.data")


def revision_of(n_questions: int) -> str:
    if n_questions == 817:
        return "original-817 (2021; Hugging Face truthful_qa)"
    if n_questions == 790:
        return "2025-01 revision (790 questions; official repo)"
    return f"unknown revision ({n_questions} questions)"


_LABELS = TypeAdapter(list[Annotated[int, Field(strict=True, ge=0, le=1)]])


def _labels(raw: Any, where: str, kind: str) -> list[int]:
    """0/1 labels as ints; 1.7, "1" or True is an error naming the field, never truncated."""
    values = raw.tolist() if hasattr(raw, "tolist") else list(raw)
    try:
        return _LABELS.validate_python(values)
    except ValidationError as e:
        raise ClBenchError(describe_validation_error(f"{where}: {kind}.labels", e)) from None


EmptyChoices = Literal["keep", "drop", "error"]


def make_targets(choices: list[str], labels: list[int], where: str, kind: str, empty: EmptyChoices = "keep") -> MCTargets:
    if len(choices) != len(labels):
        raise ClBenchError(f"{where}: {kind} has {len(choices)} choices but {len(labels)} labels")
    n_in = len(choices)
    if empty == "drop":
        labels = labels.tolist() if hasattr(labels, "tolist") else list(labels)  # a parquet row's numpy array
        kept = [(c, v) for c, v in zip(choices, labels) if not (isinstance(c, str) and not c.strip())]
        choices, labels = [c for c, _ in kept], [v for _, v in kept]
    if len(choices) < 2:
        raise ClBenchError(f"{where}: {kind} has fewer than two choices")
    for c in choices:
        if not isinstance(c, str):
            raise ClBenchError(f"{where}: {kind} has a non-string answer choice {c!r}")
        if empty == "error" and not c.strip():
            raise ClBenchError(
                f"{where}: {kind} has an empty answer choice (empty_choices: keep scores it as lm-eval does, drop skips it)"
            )
    labs = _labels(labels, where, kind)
    if any(x not in (0, 1) for x in labs):
        raise ClBenchError(f"{where}: {kind} labels must be 0 or 1, got {sorted(set(labs))}")
    if 1 not in labs:
        raise ClBenchError(f"{where}: {kind} has no true answer (no label 1)")
    if 0 not in labs:
        raise ClBenchError(f"{where}: {kind} has no false answer (no label 0)")
    if kind == "mc1_targets" and labs.count(1) != 1:
        raise ClBenchError(f"{where}: mc1_targets must have exactly one true answer, got {labs.count(1)}")
    return MCTargets(tuple(choices), tuple(labs), n_in - len(choices))


def _question(
    row: dict[str, Any], where: str, mc1: tuple[list, list], mc2: tuple[list, list], empty: EmptyChoices
) -> MCQuestion:
    q = row.get("question")
    if not isinstance(q, str) or not q.strip():
        raise ClBenchError(f"{where}: missing or empty 'question'")
    return MCQuestion(
        q, make_targets(*mc1, where, "mc1_targets", empty), make_targets(*mc2, where, "mc2_targets", empty)
    )

def read_mc_json(path: Path, empty: EmptyChoices = "keep") -> list[MCQuestion]:
    """The official ``mc_task.json``; answer→label objects keep their file order (duplicates too)."""
    try:
        rows = json.loads(read_text(path, MAX_DATA_TEXT_BYTES, "mc_task.json"), object_pairs_hook=lambda pairs: pairs)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ClBenchError(f"{path}: not a readable mc_task.json ({type(e).__name__}: {str(e)[:100]})") from None
    if not isinstance(rows, list):
        raise ClBenchError(f"{path}: expected a JSON list of questions")
    out = []
    for i, pairs in enumerate(rows):
        row = dict(pairs) if isinstance(pairs, list) else {}
        where = f"{path} item {i}"
        for key in ("mc1_targets", "mc2_targets"):
            if not isinstance(row.get(key), list):
                raise ClBenchError(f"{where}: missing '{key}' (an answer -> 0/1 object)")
        mc1 = ([a for a, _ in row["mc1_targets"]], [v for _, v in row["mc1_targets"]])
        mc2 = ([a for a, _ in row["mc2_targets"]], [v for _, v in row["mc2_targets"]])
        out.append(_question(row, where, mc1, mc2, empty))
    return out


def read_hf_parquet(files: list[Path], empty: EmptyChoices = "keep") -> list[MCQuestion]:
    import pandas as pd

    try:
        df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    except (OSError, ValueError, ImportError) as e:  # pyarrow's errors subclass these
        raise ClBenchError(f"{files[0].parent}: cannot read the parquet files ({e})") from None
    missing = {"question", "mc1_targets", "mc2_targets"} - set(df.columns)
    if missing:
        raise ClBenchError(f"{files[0]}: missing column(s) {sorted(missing)}")
    out = []
    for i, row in enumerate(df.to_dict("records")):
        where = f"{files[0].parent} row {i}"
        targets = []
        for key in ("mc1_targets", "mc2_targets"):
            t = row[key]
            if not isinstance(t, dict) or "choices" not in t or "labels" not in t:
                raise ClBenchError(f"{where}: '{key}' must be {{choices, labels}}")
            targets.append((list(t["choices"]), t["labels"]))  # labels checked by make_targets, never cast
        out.append(_question(row, where, targets[0], targets[1], empty))
    return out


def read_csv(path: Path, empty: EmptyChoices = "keep") -> list[MCQuestion]:
    import pandas as pd

    try:
        df = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ClBenchError(f"{path}: not a readable TruthfulQA.csv ({e})") from None
    need = {"Question", "Best Answer", "Correct Answers", "Incorrect Answers"}
    if need - set(df.columns):
        raise ClBenchError(f"{path}: missing column(s) {sorted(need - set(df.columns))}")

    def split(cell: str) -> list[str]:
        return [a.strip() for a in cell.split(";") if a.strip()]

    out = []
    for i, row in enumerate(df.to_dict("records")):
        where = f"{path} row {i + 2}"
        best, correct, wrong = row["Best Answer"].strip(), split(row["Correct Answers"]), split(row["Incorrect Answers"])
        mc1 = ([best, *wrong], [1] + [0] * len(wrong))
        mc2 = ([*correct, *wrong], [1] * len(correct) + [0] * len(wrong))
        out.append(_question({"question": row["Question"]}, where, mc1, mc2, empty))
    return out


class TruthfulQAParams(Strict):
    source: Literal["auto", "mc_json", "hf_parquet", "csv"] = "auto"
    empty_choices: EmptyChoices = "keep"  # the 2025 mc_task.json has 39 empty strings; lm-eval keeps them
    limit: int | None = None  # first N questions (smoke runs)


def _locate(folder: Path, source: str) -> tuple[str, list[Path]]:
    candidates = {
        "mc_json": [folder / "data" / "mc_task.json", folder / "mc_task.json"],
        "hf_parquet": sorted((folder / "multiple_choice").glob("validation-*.parquet")),
        "csv": [folder / "TruthfulQA.csv"],
    }
    order = ["hf_parquet", "mc_json"] if source == "auto" else [source]
    for kind in order:
        found = [p for p in candidates[kind] if p.is_file()]
        if found:
            return kind, found if kind == "hf_parquet" else found[:1]
    raise ClBenchError(f"no TruthfulQA {'files' if source == 'auto' else source} in {folder}: {LAYOUT_HINT}")


@register("dataset", "truthfulqa")
def load_truthfulqa(params: dict[str, Any], data_root: Path | None) -> MultipleChoiceData:
    p = validate_params(TruthfulQAParams, params, "dataset truthfulqa params")
    if data_root is None:
        raise ClBenchError(f"TruthfulQA needs real data: {LAYOUT_HINT} (or set CLBENCH_DATA)")
    folder = Path(data_root) / "truthfulqa"
    kind, files = _locate(folder, p.source)
    reader = {"mc_json": lambda e: read_mc_json(files[0], e), "hf_parquet": lambda e: read_hf_parquet(files, e),
              "csv": lambda e: read_csv(files[0], e)}[kind]
    questions = reader(p.empty_choices)
    if not questions:
        raise ClBenchError(f"{files[0]}: no questions")
    n_all = len(questions)
    if p.limit is not None:
        questions = questions[: p.limit]
    dropped = {"mc1": sum(q.mc1.n_dropped for q in questions), "mc2": sum(q.mc2.n_dropped for q in questions)}
    h = hashlib.sha256()
    for f in files:
        h.update(read_bytes(f, MAX_DATA_TEXT_BYTES, "TruthfulQA file"))
    return MultipleChoiceData(
        name="truthfulqa", questions=questions, revision=revision_of(n_all),
        source=f"{kind}:{files[0].relative_to(data_root)}", file_sha256=h.hexdigest(),
        meta={"n_questions_in_file": n_all, "layout": kind, "empty_choices": p.empty_choices,
              "empty_choices_dropped": dropped},
    )
