"""Bounded YAML: aliases are counted and their expansion measured before anything expands them.

YAML aliases make a graph, not a tree: 272 bytes of nested aliases ("billion laughs") are nine
levels of nine references each, 9^9 strings once expanded. PyYAML composes that graph cheaply —
an alias is the same node object again — but whatever walks the result as a tree (turning it into
JSON, validating it, storing it) expands it, and froze the API server for 10-23 s. Kubernetes had
this as CVE-2019-11253 and now refuses documents whose aliases expand too much.

Here every document is composed first (libyaml when available: it also caps nesting at 1000),
then its node graph is measured in one pass over its distinct nodes — how many alias references
it holds, how big and how deep it would be expanded, whether an alias refers to a node that
contains it — and only a document within :class:`YamlBounds` is constructed. A refusal is a
:class:`YamlBoundsError`, a ``yaml.MarkedYAMLError`` pointing at the node where a bound was
crossed, so callers that already handle YAML errors report it as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class YamlBounds:
    """Upper bounds on one YAML document, checked before it is constructed."""

    max_aliases: int = 1000
    """Alias references (``*name``, merges ``<<: *name`` included) one document may hold."""

    max_expanded_bytes: int = 3 << 20
    """How big the document may be once its aliases are expanded, estimated from its scalars
    (3 MiB: Kubernetes' largest request, twice the largest object it stores)."""

    max_depth: int = 512
    """Deepest nesting once expanded (admission refuses objects deeper than 100 with a message
    naming the field; this only keeps anything recursive away from pathological input)."""


DEFAULT_BOUNDS = YamlBounds()


class YamlBoundsError(yaml.MarkedYAMLError):
    """A document over one of its :class:`YamlBounds` (or with a recursive alias)."""

    def __init__(self, problem: str, node: Node) -> None:
        super().__init__(problem=problem, problem_mark=node.start_mark)


def load_all(stream: str | bytes, bounds: YamlBounds = DEFAULT_BOUNDS) -> list[Any]:
    """Every document of ``stream`` (``None`` for empty ones), as ``yaml.safe_load_all`` would
    give them, or :class:`YamlBoundsError` / another ``yaml.YAMLError``."""
    loader = _Loader(stream)
    try:
        docs: list[Any] = []
        while loader.check_node():
            node = loader.get_node()
            measure(node, bounds)
            docs.append(loader.construct_document(node))
        return docs
    finally:
        loader.dispose()


def load(stream: str | bytes, bounds: YamlBounds = DEFAULT_BOUNDS) -> Any:
    """The one document of ``stream`` (None when empty), as ``yaml.safe_load`` would give it."""
    loader = _Loader(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        measure(node, bounds)
        return loader.construct_document(node)
    finally:
        loader.dispose()


@dataclass
class Expansion:
    """What a document's node graph comes to once expanded."""

    aliases: int = 0
    size: int = 0
    depth: int = 0


def measure(root: Node, bounds: YamlBounds = DEFAULT_BOUNDS) -> Expansion:
    """Measure the expansion of ``root``'s graph, visiting each distinct node once; raise
    :class:`YamlBoundsError` as soon as a bound is crossed."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, depth)
    entered: set[int] = set()  # nodes whose subtree is being measured: the current path
    aliases = 0
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        if leaving:
            entered.discard(key)
            size, depth = _combine(node, sizes)
            if size > bounds.max_expanded_bytes:
                raise YamlBoundsError(
                    f"aliases expand this document to more than {bounds.max_expanded_bytes} "
                    "bytes (the limit; expand them by hand if the document is meant to be "
                    "this large)",
                    node,
                )
            if depth > bounds.max_depth:
                raise YamlBoundsError(f"nested more than {bounds.max_depth} levels deep", node)
            sizes[key] = (size, depth)
            continue
        if key in sizes:  # seen before: this reference is an alias
            aliases += 1
            if aliases > bounds.max_aliases:
                raise YamlBoundsError(
                    f"more than {bounds.max_aliases} aliases in one document (the limit)", node
                )
            continue
        if key in entered:
            raise YamlBoundsError("an alias refers to a node that contains it", node)
        entered.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(_children(node)))
    size, depth = sizes[id(root)]
    return Expansion(aliases, size, depth)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _combine(node: Node, sizes: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(expanded size, depth) of ``node`` from its children's: a scalar costs its text and a
    separator, a collection its brackets and its children."""
    if isinstance(node, ScalarNode):
        return len(node.value) + 1, 0
    parts = [sizes[id(child)] for child in _children(node)]
    return 2 + sum(s for s, _ in parts), 1 + max((d for _, d in parts), default=0)
