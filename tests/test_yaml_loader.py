"""The one YAML loader: safe, strict (duplicate keys), bounded (aliases, depth, size), C when present."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cl_bench.errors import ClBenchError
from cl_bench.specs import read_yaml
from cl_bench.yaml_loader import MAX_NODES, StrictSafeLoader, check_expansion, load_yaml_text


def test_plain_documents_load_as_safe_load_does() -> None:
    text = "a: 1\nb: [x, {c: 2.5}]\nd: null\ne: 2026-01-02\n"
    assert load_yaml_text(text, "t") == yaml.safe_load(text)


def test_the_c_parser_is_used_when_pyyaml_has_it() -> None:
    if yaml.__with_libyaml__:
        assert issubclass(StrictSafeLoader, yaml.CSafeLoader)
    else:  # pragma: no cover - a PyYAML built without libyaml
        assert issubclass(StrictSafeLoader, yaml.SafeLoader)


def test_duplicate_keys_are_refused_with_both_lines() -> None:
    with pytest.raises(ClBenchError, match=r"t: line 3 is not valid YAML: duplicate key 'k' \(first given on line 2\)"):
        load_yaml_text("p:\n  k: 20\n  k: 1\n", "t")
    with pytest.raises(ClBenchError, match="duplicate key 'a'"):
        load_yaml_text("{a: 1, a: 2}", "t")


def test_a_merge_key_may_be_overridden_locally() -> None:
    assert load_yaml_text("base: &b {k: 1, j: 2}\nx:\n  <<: *b\n  k: 3\n", "t")["x"] == {"k": 3, "j": 2}


def test_python_tags_never_build_objects() -> None:
    with pytest.raises(ClBenchError, match="not valid YAML"):
        load_yaml_text("a: !!python/object/apply:os.system ['true']\n", "t")


def test_aliases_are_measured_expanded() -> None:
    # 10 levels of 10 aliases each: 10^10 values once expanded, 120 lines of text
    bomb = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n" for i in range(1, 11))
    with pytest.raises(ClBenchError, match=f"expands to more than {MAX_NODES} values"):
        check_expansion(bomb, "t")  # measured on the events, never built
    small = "a: &a [1, 2]\nb: *a\nc: *a\n"
    assert load_yaml_text(small, "t") == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}
    with pytest.raises(ClBenchError, match=r"alias \*a refers to itself"):
        load_yaml_text("a: &a [1, *a]\n", "t")


def test_nesting_and_size_and_encoding_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(ClBenchError, match="nested deeper than 64 levels"):
        load_yaml_text("a: " + "[" * 10_000, "t")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: " + b"x" * (4 * 2**20))
    with pytest.raises(ClBenchError, match=r"big.yaml is 4194307 bytes, more than the 4194304-byte limit"):
        read_yaml(big)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: caf\xe9\n")
    with pytest.raises(ClBenchError, match=r"bad.yaml is not valid UTF-8 \(byte 6\)"):
        read_yaml(bad)
    with pytest.raises(ClBenchError, match="does not exist"):
        read_yaml(tmp_path / "none.yaml")


def test_command_line_values_are_read_by_the_same_strict_loader() -> None:
    from cl_bench.cli import _arch_params

    assert _arch_params(["model=resnet50", "n=3", "l=[1, 2]", "s=a: b: c"]) == {
        "model": "resnet50", "n": 3, "l": [1, 2], "s": "a: b: c"}  # not YAML: the text itself
    for bad, why in (("a=&a [*a]", "refers to itself"), ("b={k: 1, k: 2}", "duplicate key 'k'"),
                     ("c=!!python/object/apply:os.system [true]", "could not determine a constructor")):
        with pytest.raises(ClBenchError, match=why):
            _arch_params([bad])
