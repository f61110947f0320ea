"""The one YAML loader of cl_bench: safe, strict and bounded.

- Safe: PyYAML's safe constructor only (no tags that build Python objects); the C parser
  (libyaml) when PyYAML was built with it, the pure-Python one otherwise.
- Strict: a mapping that repeats a key is an error (``k: 20`` then ``k: 1`` would silently run
  with 1); a YAML merge key (``<<: *base``) may still be overridden by a local key.
- Bounded: before anything is built, one pass over the parser's events measures the document
  as it would be after expanding every alias, and its nesting depth. An alias bomb (a few
  lines that expand to billions of nodes), a recursive alias or a document nested deeper than
  any spec is refused in time linear in the file's size. (Callers cap the file size.)
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    NodeEvent,
)

from cl_bench.errors import ClBenchError

MAX_NODES = 200_000  # expanded; the committed specs have a few hundred
MAX_DEPTH = 64

_Base: type = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictSafeLoader(_Base):  # type: ignore[misc, valid-type]
    """``SafeLoader`` (C when available) that refuses duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {seen[key]}); keep one of them",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: the base class reports it
                continue
        return super().construct_mapping(node, deep=deep)


def check_expansion(text: str, where: str, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    """Refuse a document that expands past ``max_nodes`` nodes or nests past ``max_depth``."""
    sizes: dict[str, int] = {}
    open_anchors: set[str] = set()
    stack: list[list[Any]] = []  # [expanded size so far, anchor]
    total = 0
    try:
        for event in yaml.parse(text, Loader=_Base):
            if isinstance(event, CollectionStartEvent):
                if len(stack) >= max_depth:
                    raise ClBenchError(f"{where}: nested deeper than {max_depth} levels; a spec is a few levels deep")
                stack.append([1, event.anchor])
                if event.anchor:
                    open_anchors.add(event.anchor)
                continue
            if isinstance(event, CollectionEndEvent):
                size, anchor = stack.pop()
                if anchor:
                    sizes[anchor] = size
                    open_anchors.discard(anchor)
            elif isinstance(event, AliasEvent):
                if event.anchor in open_anchors:
                    raise ClBenchError(f"{where}: alias *{event.anchor} refers to itself (a recursive structure)")
                size = sizes.get(event.anchor, 1)
            elif isinstance(event, NodeEvent):  # a scalar
                size = 1
                if event.anchor:
                    sizes[event.anchor] = 1
            else:
                continue
            if stack:
                stack[-1][0] += size
            else:
                total += size
            if total + sum(s for s, _ in stack) > max_nodes:
                raise ClBenchError(f"{where}: expands to more than {max_nodes} values once its aliases (*name) "
                                   "are substituted (an alias bomb?); write the spec out plainly")
    except yaml.YAMLError:
        return  # syntax errors are reported (with their line) by the real load


def load_yaml_text(text: str, where: str) -> Any:
    """Parse one YAML document with :class:`StrictSafeLoader` after :func:`check_expansion`."""
    check_expansion(text, where)
    loader = StrictSafeLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ClBenchError(f"{where}:{line} is not valid YAML: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise ClBenchError(f"{where}: nested too deeply to be a spec") from None
    finally:
        loader.dispose()


def load_yaml_value(text: str, where: str) -> Any:
    """A command-line value read as YAML (numbers, booleans, lists), strictly and bounded like a spec;
    text that is not YAML at all stays the text itself. Duplicate keys, unsafe tags, alias bombs
    and deep nesting are errors, as in a spec file."""
    check_expansion(text, where)
    loader = StrictSafeLoader(text)
    try:
        return loader.get_single_data()
    except yaml.constructor.ConstructorError as e:
        raise ClBenchError(f"{where}: {getattr(e, 'problem', None) or e}") from None
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise ClBenchError(f"{where}: nested too deeply") from None
    finally:
        loader.dispose()
