"""``-o jsonpath=TEMPLATE``: kubectl's JSONPath templates, the part people use.

A template is text with ``{…}`` expressions: ``{.metadata.name}``, ``{.items[*].metadata.name}``,
``{.items[0]}``, ``{.items[-1:]}``, ``{..name}`` (at any depth), ``{.metadata.labels['app']}``,
``{.items[?(@.status.phase=="Running")].metadata.name}`` (``==``, ``!=``, ``<``, ``<=``, ``>``,
``>=``, or ``?(@.x)`` for "has x"), ``{range .items[*]}{.metadata.name}{"\\n"}{end}`` and quoted
literals ``{"\\t"}``. Several results of one expression are joined by a space; strings print as
they are, other values as JSON. A field that is not there prints nothing (kubectl's
``--allow-missing-template-keys``). A malformed template is a usage error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MISSING = object()


class JsonPathError(ValueError):
    """The template cannot be parsed."""


# -- the template: text, expressions, ranges


@dataclass
class _Range:
    path: str
    body: list[Any] = field(default_factory=list)


def _split(template: str) -> list[tuple[str, str]]:
    """(``text``|``expr``, content) pieces; braces inside quotes do not count."""
    pieces: list[tuple[str, str]] = []
    i, text = 0, []
    while i < len(template):
        c = template[i]
        if c != "{":
            if c == "}":
                raise JsonPathError(f"unmatched '}}' at {i} in {template!r}")
            text.append(c)
            i += 1
            continue
        if text:
            pieces.append(("text", "".join(text)))
            text = []
        j, quote = i + 1, ""
        while j < len(template):
            ch = template[j]
            if quote:
                if ch == "\\":
                    j += 1
                elif ch == quote:
                    quote = ""
            elif ch in "\"'":
                quote = ch
            elif ch == "}":
                break
            j += 1
        else:
            raise JsonPathError(f"unclosed '{{' at {i} in {template!r}")
        pieces.append(("expr", template[i + 1 : j].strip()))
        i = j + 1
    if text:
        pieces.append(("text", "".join(text)))
    return pieces


def parse(template: str) -> list[Any]:
    """The template as a tree of text (str), expressions (``("expr", path)``) and ranges."""
    root: list[Any] = []
    stack: list[list[Any]] = [root]
    for kind, content in _split(template):
        if kind == "text":
            stack[-1].append(content)
        elif content.startswith("range ") or content == "range":
            r = _Range(content[5:].strip())
            _steps(r.path)  # fail early on a bad path
            stack[-1].append(r)
            stack.append(r.body)
        elif content == "end":
            if len(stack) == 1:
                raise JsonPathError("{end} without {range}")
            stack.pop()
        elif content[:1] in "\"'" and content[-1:] == content[:1] and len(content) >= 2:
            stack[-1].append(_unquote(content))
        else:
            _steps(content)
            stack[-1].append(("expr", content))
    if len(stack) != 1:
        raise JsonPathError("{range} without {end}")
    return root


def _unquote(text: str) -> str:
    """A quoted literal, with JSON escapes (``"\\n"``, ``'\\t'``)."""
    inner = text[1:-1]
    try:
        value = json.loads('"' + (inner if text[0] == '"' else inner.replace('"', '\\"')) + '"')
    except ValueError as exc:
        raise JsonPathError(f"bad literal {text}") from exc
    return str(value)


# -- paths


_NAME = re.compile(r"[A-Za-z_$][\w$-]*")


def _steps(path: str) -> list[tuple[str, Any]]:
    """``.a[*]..b[?(@.x=="y")]`` → [("key", "a"), ("all", None), ("deep", "b"), ("filter", …)]."""
    p = path.strip()
    if p.startswith("$"):
        p = p[1:]
    if p.startswith("@"):
        p = p[1:]
    steps: list[tuple[str, Any]] = []
    i = 0
    while i < len(p):
        if p.startswith("..", i):
            m = _NAME.match(p, i + 2)
            if p.startswith("*", i + 2):
                steps.append(("deep", "*"))
                i += 3
                continue
            if not m:
                raise JsonPathError(f"expected a field name after '..' in {path!r}")
            steps.append(("deep", m.group()))
            i = m.end()
        elif p[i] == ".":
            if p.startswith("*", i + 1):
                steps.append(("all", None))
                i += 2
                continue
            m = _NAME.match(p, i + 1)
            if not m:
                if i + 1 == len(p):  # a bare "." (the current object)
                    i += 1
                    continue
                raise JsonPathError(f"expected a field name at {i + 1} in {path!r}")
            steps.append(("key", m.group()))
            i = m.end()
        elif p[i] == "[":
            j = _close_bracket(p, i, path)
            steps.append(_bracket(p[i + 1 : j].strip(), path))
            i = j + 1
        else:
            m = _NAME.match(p, i)
            if i == 0 and m:  # "metadata.name" without the leading dot
                steps.append(("key", m.group()))
                i = m.end()
            else:
                raise JsonPathError(f"unexpected {p[i]!r} at {i} in {path!r}")
    return steps


def _close_bracket(p: str, i: int, path: str) -> int:
    depth, quote, j = 0, "", i
    while j < len(p):
        ch = p[j]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return j
        j += 1
    raise JsonPathError(f"unclosed '[' in {path!r}")


_FILTER = re.compile(r"^\?\((.*)\)$", re.S)
_COMPARE = re.compile(r"^(@[^=!<>]*?)\s*(==|!=|<=|>=|<|>)\s*(.+)$", re.S)


def _bracket(inner: str, path: str) -> tuple[str, Any]:
    if inner == "*":
        return ("all", None)
    m = _FILTER.match(inner)
    if m:
        cond = m.group(1).strip()
        c = _COMPARE.match(cond)
        if c:
            return ("filter", (_steps(c.group(1)), c.group(2), _literal(c.group(3).strip(), path)))
        if not cond.startswith("@"):
            raise JsonPathError(f"a filter starts with @ in {path!r}")
        return ("filter", (_steps(cond), "exists", None))
    if inner[:1] in "\"'":
        names = [n.strip()[1:-1] for n in inner.split(",")]
        return ("keys", names)
    if ":" in inner:
        parts = inner.split(":")
        if len(parts) > 3:
            raise JsonPathError(f"bad slice [{inner}] in {path!r}")
        try:
            nums = [int(x) if x.strip() else None for x in parts]
        except ValueError:
            raise JsonPathError(f"bad slice [{inner}] in {path!r}") from None
        return ("slice", tuple(nums + [None] * (3 - len(nums))))
    try:
        return ("indexes", [int(x) for x in inner.split(",")])
    except ValueError:
        raise JsonPathError(f"bad index [{inner}] in {path!r}") from None


def _literal(text: str, path: str) -> Any:
    if text[:1] in "\"'" and text[-1:] == text[:1]:
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        raise JsonPathError(f"bad value {text!r} in a filter of {path!r}") from None


def _children(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return list(node.values())
    if isinstance(node, list):
        return list(node)
    return []


def _descendants(node: Any) -> list[Any]:
    out = [node]
    for child in _children(node):
        out.extend(_descendants(child))
    return out


def _compare(left: Any, op: str, right: Any) -> bool:
    if op == "exists":
        return left is not MISSING and left is not None
    if left is MISSING:
        return op == "!="
    if op == "==":
        return bool(left == right or str(left) == str(right))
    if op == "!=":
        return not (left == right or str(left) == str(right))
    try:
        return bool(
            {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]
        )
    except TypeError:
        return False


def select(steps: list[tuple[str, Any]], root: Any) -> list[Any]:
    nodes = [root]
    for op, arg in steps:
        out: list[Any] = []
        for n in nodes:
            if op == "key":
                if isinstance(n, dict) and arg in n:
                    out.append(n[arg])
            elif op == "keys":
                out.extend(n[k] for k in arg if isinstance(n, dict) and k in n)
            elif op == "all":
                out.extend(_children(n))
            elif op == "deep":
                for d in _descendants(n):
                    if arg == "*":
                        out.extend(_children(d))
                    elif isinstance(d, dict) and arg in d:
                        out.append(d[arg])
            elif op == "indexes":
                if isinstance(n, list):
                    out.extend(n[i] for i in arg if -len(n) <= i < len(n))
            elif op == "slice":
                if isinstance(n, list):
                    start, stop, stride = arg
                    out.extend(n[slice(start, stop, stride)])
            elif op == "filter":
                sub, cmp, value = arg
                for item in _children(n):
                    found = select(sub, item)
                    if _compare(found[0] if found else MISSING, cmp, value):
                        out.append(item)
        nodes = out
    return nodes


# -- rendering


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _render(tree: list[Any], node: Any) -> str:
    out: list[str] = []
    for part in tree:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, _Range):
            for item in select(_steps(part.path), node):
                out.append(_render(part.body, item))
        else:
            out.append(" ".join(_show(v) for v in select(_steps(part[1]), node)))
    return "".join(out)


def render(template: str, data: Any) -> str:
    """``template`` applied to ``data`` (raises :class:`JsonPathError` if it is malformed)."""
    return _render(parse(template), data)
