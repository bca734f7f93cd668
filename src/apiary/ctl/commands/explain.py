"""``apiaryctl explain KIND[.field.path] [--recursive]``: what a field is, from the schema.

The schema is the one the server validates with — the kinds' pydantic models in
:mod:`apiary.resources` (the same the server's ``/openapi.json`` is generated from) — so it
needs no server. Descriptions are the models' docstrings: a class's for the type, the string
under an attribute for that field.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import sys
import textwrap
from functools import cache
from typing import Annotated, Any, get_args

import typer
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from apiary.ctl import output
from apiary.ctl.context import kind_arg
from apiary.resources import API_VERSION
from apiary.resources.kinds import MODELS

Obj = dict[str, Any]
REF = "#/$defs/"
INDENT = "   "


# -- descriptions: docstrings of the classes and of their attributes


def _attribute_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the string literal right under each annotated attribute."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for stmt, nxt in itertools.pairwise(body):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _models_in(annotation: Any, seen: set[type]) -> None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return
        seen.add(annotation)
        for f in annotation.model_fields.values():
            _models_in(f.annotation, seen)
        return
    for arg in get_args(annotation):
        _models_in(arg, seen)


@cache
def descriptions() -> dict[str, tuple[str, dict[str, str]]]:
    """``{ClassName: (class doc, {wire field name: doc})}`` for every model of every kind."""
    models: set[type] = set()
    for model in MODELS.values():
        _models_in(model, models)
        if model.status_model is not None:
            _models_in(model.status_model, models)
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for cls in models:
        assert issubclass(cls, BaseModel)
        fields: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            if isinstance(klass, type) and issubclass(klass, BaseModel) and klass is not BaseModel:
                fields.update(_attribute_docs(klass))
        wire = {
            (info.alias or name): fields[name]
            for name, info in cls.model_fields.items()
            if name in fields
        }
        if cls in MODELS.values():  # a kind: its own docstring, else its module's first lines
            own = (
                cls.__dict__.get("__doc__")
                or (
                    (getattr(sys.modules.get(cls.__module__), "__doc__", "") or "").split("\n\n")[0]
                )
            )
        else:  # the nearest docstring of ours (HiveStatus says nothing; Status does)
            own = next(
                (
                    k.__dict__["__doc__"]
                    for k in cls.__mro__
                    if k.__dict__.get("__doc__")
                    and k.__module__.startswith("apiary.")
                    and k.__name__ != "ApiModel"
                ),
                None,
            )
        out[cls.__name__] = (inspect.cleandoc(own) if own else "", wire)
    return out


# -- the schema of a kind


@cache
def kind_schema(kind: str) -> tuple[Obj, Obj]:
    """(the kind's schema, its ``$defs``), ``status`` replaced by the kind's status model."""
    model = MODELS[kind]
    status = model.status_model
    models: list[tuple[type[BaseModel], Any]] = [(model, "validation")]
    if status is not None:
        models.append((status, "validation"))
    _, top = models_json_schema(models, ref_template=REF + "{model}")
    defs: Obj = dict(top.get("$defs", {}))
    schema = dict(defs[model.__name__])
    props = dict(schema.get("properties") or {})
    if status is not None and status.__name__ in defs:
        props["status"] = {"$ref": REF + status.__name__}
    schema["properties"] = props
    return schema, defs


def _resolve(node: Obj, defs: Obj) -> Obj:
    """The node with ``$ref`` and ``X | None`` unwrapped (constraints kept)."""
    while True:
        if "$ref" in node:
            name = node["$ref"].removeprefix(REF)
            node = {**defs.get(name, {}), **{k: v for k, v in node.items() if k != "$ref"}}
            node.setdefault("title", name)
            node["_class"] = name
            continue
        options = [o for o in node.get("anyOf") or [] if o.get("type") != "null"]
        if len(options) == 1 and "anyOf" in node:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**options[0], **{k: v for k, v in rest.items() if k not in ("title",)}}
            continue
        return node


def type_name(node: Obj, defs: Obj) -> str:
    node = _resolve(node, defs)
    if node.get("type") == "array":
        return "[]" + type_name(node.get("items") or {}, defs)
    if "_class" in node and node.get("properties"):
        return str(node["_class"])
    if node.get("type") == "object":
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return "map[string]" + type_name(extra, defs)
        return "object"
    if "anyOf" in node:
        return "|".join(type_name(o, defs) for o in node["anyOf"] if o.get("type") != "null")
    if "const" in node:
        return "string"
    t = node.get("type")
    return str(t) if isinstance(t, str) else "any"


def _element(node: Obj, defs: Obj) -> Obj:
    """What a field holds, looking through arrays and maps (``stages`` → a Stage)."""
    node = _resolve(node, defs)
    while node.get("type") == "array":
        node = _resolve(node.get("items") or {}, defs)
    extra = node.get("additionalProperties")
    if not node.get("properties") and isinstance(extra, dict) and extra:
        node = _resolve(extra, defs)
    return node


def constraints(node: Obj, defs: Obj) -> str:
    node = _resolve(node, defs)
    bits = []
    if "enum" in node:
        bits.append("one of " + ", ".join(str(v) for v in node["enum"]))
    if "const" in node:
        bits.append(f"always {node['const']}")
    if node.get("default") is not None:
        bits.append(f"default {node['default']}")
    for key, word in (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">")):
        if key in node:
            bits.append(f"{word} {node[key]}")
    for key, word in (("minLength", "min length"), ("maxLength", "max length")):
        if key in node:
            bits.append(f"{word} {node[key]}")
    if "pattern" in node:
        bits.append(f"pattern {node['pattern']}")
    return "; ".join(bits)


def lookup(kind: str, path: list[str]) -> tuple[Obj, str, str, Obj]:
    """(the field's schema, its description, the class it belongs to, the kind's $defs)."""
    schema, defs = kind_schema(kind)
    node: Obj = {**schema, "_class": MODELS[kind].__name__}
    doc = descriptions().get(MODELS[kind].__name__, ("", {}))[0]
    walked: list[str] = []
    parent_doc = ""
    for name in path:
        holder = _element(node, defs)
        props = holder.get("properties") or {}
        if name not in props:
            where = ".".join([kind.lower(), *walked]) or kind.lower()
            known = ", ".join(props) or "none"
            raise typer.BadParameter(
                f"{where} has no field {name!r} (fields: {known})", param_hint="FIELD"
            )
        cls = holder.get("_class", "")
        doc = descriptions().get(cls, ("", {}))[1].get(name, "")
        parent_doc = descriptions().get(cls, ("", {}))[0]
        node = props[name]
        walked.append(name)
    inner = _element(node, defs)
    if not doc and inner.get("_class"):
        doc = descriptions().get(inner["_class"], ("", {}))[0]
    if not doc and path:  # the class that holds the field often says what it means
        doc = parent_doc
    return node, doc, str(inner.get("_class", "")), defs


def _wrapped(text: str, indent: str) -> list[str]:
    lines: list[str] = []
    for para in (text or "<empty>").split("\n\n"):
        joined = " ".join(para.split())
        lines += textwrap.wrap(joined, 96, initial_indent=indent, subsequent_indent=indent) or [""]
    return lines


def field_lines(node: Obj, defs: Obj, recursive: bool, depth: int = 1) -> list[str]:
    holder = _element(node, defs)
    props = holder.get("properties") or {}
    required = set(holder.get("required") or [])
    docs = descriptions().get(str(holder.get("_class", "")), ("", {}))[1]
    lines: list[str] = []
    pad = INDENT * depth
    for name, sub in props.items():
        flag = " -required-" if name in required else ""
        lines.append(f"{pad}{name}\t<{type_name(sub, defs)}>{flag}")
        if recursive:
            lines += field_lines(sub, defs, True, depth + 1)
            continue
        limits = constraints(sub, defs)
        text = " ".join(p for p in (docs.get(name, ""), f"({limits})" if limits else "") if p)
        if text:
            lines += _wrapped(text, pad + "  ")
        lines.append("")
    return lines


def explain_command(
    target: Annotated[
        str, typer.Argument(help="KIND or KIND.field.path (hive.spec.stages).", metavar="FIELD")
    ],
    recursive: Annotated[
        bool, typer.Option("--recursive", help="Every field below, names and types only.")
    ] = False,
) -> None:
    """Describe a kind or one of its fields: type, constraints, meaning, sub-fields."""
    kind_name, *path = target.split(".")
    info = kind_arg(kind_name)
    node, doc, _cls, defs = lookup(info.kind, [p for p in path if p])
    lines = [f"KIND:     {info.kind}", f"VERSION:  {API_VERSION}", ""]
    if path:
        lines += [f"FIELD:    {path[-1]} <{type_name(node, defs)}>", ""]
    lines.append("DESCRIPTION:")
    lines += _wrapped(doc, INDENT + "  ")
    limits = constraints(node, defs) if path else ""
    if limits:
        lines += ["", f"{INDENT}  ({limits})"]
    fields = field_lines(node, defs, recursive)
    if fields:
        lines += ["", "FIELDS:", *fields]
    output.out("\n".join(lines).rstrip("\n").expandtabs(24))


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)
