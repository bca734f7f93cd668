"""Finds fields a model does not know, at any depth, in the raw input.

The walk follows the model's declared types over the *input* rather than over a validated
instance, so unknown fields are found even when validation fails elsewhere — a strict apply then
reports them together with every other problem. What to look for under each field is worked out
once per model and cached, because admission runs on every write.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from apiary.resources.base import Loc


@dataclass(frozen=True)
class _Plan:
    """What may sit at one place: a model, a list or a map of something, or nothing to check."""

    model: type[BaseModel] | None = None
    items: _Plan | None = None  # for lists
    values: _Plan | None = None  # for mappings


_LEAF = _Plan()
_FIELDS: dict[type[BaseModel], dict[str, _Plan]] = {}


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation may hold (Optional, unions and Annotated removed)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [t for arg in get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _plan(annotation: Any) -> _Plan:
    model = items = values = None
    for candidate in _unwrap(annotation):
        origin = get_origin(candidate)
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            model = model or candidate
        elif origin is list:
            args = get_args(candidate)
            items = items or (_plan(args[0]) if args else _LEAF)
        elif origin is dict:
            args = get_args(candidate)
            values = values or (_plan(args[1]) if len(args) == 2 else _LEAF)
    if model is None and items is None and values is None:
        return _LEAF
    return _Plan(model, items, values)


def _fields(model: type[BaseModel]) -> dict[str, _Plan]:
    fields = _FIELDS.get(model)
    if fields is None:
        fields = {(f.alias or name): _plan(f.annotation) for name, f in model.model_fields.items()}
        _FIELDS[model] = fields
    return fields


def _walk(value: Any, plan: _Plan, loc: Loc, found: list[Loc]) -> None:
    if plan is _LEAF:
        return
    if isinstance(value, dict):
        if plan.model is not None:
            fields = _fields(plan.model)
            for key, element in value.items():
                child = fields.get(key) if isinstance(key, str) else None
                if child is None:
                    found.append((*loc, str(key)))
                else:
                    _walk(element, child, (*loc, key), found)
        elif plan.values is not None:
            for key, element in value.items():
                _walk(element, plan.values, (*loc, str(key)), found)
    elif isinstance(value, list) and plan.items is not None:
        for index, element in enumerate(value):
            _walk(element, plan.items, (*loc, index), found)


def find_unknown(value: Any, annotation: Any, loc: Loc = ()) -> list[Loc]:
    """Locations in ``value`` that ``annotation`` (a model or container of models) lacks."""
    found: list[Loc] = []
    _walk(value, _plan(annotation), loc, found)
    return found
