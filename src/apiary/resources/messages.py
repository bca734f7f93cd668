"""Turns pydantic's validation errors into (field path, human message) pairs.

Messages follow the style of the API's error details — short, lower-case, saying what is
expected ("field required", "must be an integer", "must be one of 'stdin', 'http'") — and never
expose pydantic's internals or URLs.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from apiary.resources.base import FieldProblems, Loc
from apiary.resources.paths import render_path

_SIMPLE: dict[str, str] = {
    "missing": "field required",
    "string_type": "must be a string",
    "string_unicode": "must be a valid unicode string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "mapping_type": "must be a mapping",
    "list_type": "must be a list",
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def message_for(error: Any) -> str:
    """The human message for one pydantic error dict."""
    kind = str(error.get("type", ""))
    ctx: dict[str, Any] = error.get("ctx") or {}
    if kind in _SIMPLE:
        return _SIMPLE[kind]
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '?')} (got {_show(error.get('input'))})"
    bounds = {
        "greater_than_equal": ("must be at least", "ge"),
        "greater_than": ("must be greater than", "gt"),
        "less_than_equal": ("must be at most", "le"),
        "less_than": ("must be less than", "lt"),
    }
    if kind in bounds:
        text, key = bounds[kind]
        return f"{text} {ctx.get(key)}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} item(s)"
    if kind == "string_too_short":
        minimum = ctx.get("min_length")
        return "must not be empty" if minimum == 1 else f"must be at least {minimum} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    message = str(error.get("msg", "is invalid"))
    return message[:1].lower() + message[1:]


def problem_locs(exc: ValidationError, prefix: Loc = ()) -> list[tuple[Loc, str]]:
    """Every problem in ``exc`` as (location, message), expanding cross-field problems to the
    exact fields they name."""
    out: list[tuple[Loc, str]] = []
    for error in exc.errors(include_url=False):
        loc: Loc = (*prefix, *error["loc"])
        if loc and loc[-1] == "[key]":
            out.append((loc[:-1], "keys must be strings"))
            continue
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblems):
            out.extend(((*loc, *sub), message) for sub, message in cause.problems)
        else:
            out.append((loc, message_for(error)))
    return out


def render_errors(exc: ValidationError, prefix: Loc = ()) -> list[tuple[str, str]]:
    """Every problem in ``exc`` as (field path, message)."""
    return [(render_path(loc), message) for loc, message in problem_locs(exc, prefix)]
