"""Finds fields a model does not know, at any depth, in the raw input.

The walk follows the model's declared types over the *input* rather than over a validated
instance, so unknown fields are found even when validation fails elsewhere — a strict apply then
reports them together with every other problem.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from apiary.resources.base import Loc


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types an annotation may hold (Optional, unions and Annotated removed)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        found: list[Any] = []
        for arg in get_args(annotation):
            found.extend(_unwrap(arg))
        return found
    return [annotation]


def find_unknown(value: Any, annotation: Any, loc: Loc = ()) -> list[Loc]:
    """Locations in ``value`` that ``annotation`` (a model or container of models) lacks."""
    found: list[Loc] = []
    for candidate in _unwrap(annotation):
        origin = get_origin(candidate)
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            if isinstance(value, dict):
                found.extend(_model_unknown(value, candidate, loc))
                return found
        elif origin is list and isinstance(value, list):
            (item,) = get_args(candidate) or (Any,)
            for index, element in enumerate(value):
                found.extend(find_unknown(element, item, (*loc, index)))
            return found
        elif origin is dict and isinstance(value, dict):
            args = get_args(candidate)
            item = args[1] if len(args) == 2 else Any
            for key, element in value.items():
                found.extend(find_unknown(element, item, (*loc, str(key))))
            return found
    return found


def _model_unknown(value: dict[Any, Any], model: type[BaseModel], loc: Loc) -> list[Loc]:
    by_alias = {(f.alias or name): f for name, f in model.model_fields.items()}
    found: list[Loc] = []
    for key, element in value.items():
        field = by_alias.get(key) if isinstance(key, str) else None
        if field is None:
            found.append((*loc, str(key)))
        else:
            found.extend(find_unknown(element, field.annotation, (*loc, key)))
    return found
