"""The base every resource model shares, and the field types they are built from.

Models are *strict* (``"2"`` is not an integer, ``1`` is not a string: a manifest means what it
says), use camelCase aliases on the wire, and *allow* extra keys so that unknown fields survive a
round trip; :mod:`apiary.resources.unknown` reports them as warnings (or errors when strict).

Cross-field checks raise :class:`FieldProblems`, which carries paths *relative to the model* so
that an error about the second stage's name reads ``spec.stages[1].name`` rather than naming the
whole hive.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainValidator
from pydantic.alias_generators import to_camel

from apiary.resources.names import (
    dns_label_error,
    env_name_error,
    secret_key_error,
    timestamp_error,
    topic_error,
)

Loc = tuple[str | int, ...]


class FieldProblems(ValueError):
    """One or more problems found by a cross-field check, each at a path inside the model."""

    def __init__(self, problems: list[tuple[Loc, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(message for _, message in problems))


class Problems:
    """Collects cross-field problems so a validator reports all of them, not the first."""

    def __init__(self) -> None:
        self.items: list[tuple[Loc, str]] = []

    def add(self, loc: Loc, message: str) -> None:
        self.items.append((loc, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise FieldProblems(self.items)


class ApiModel(BaseModel):
    """Strict, camelCase on the wire, unknown keys kept (and reported by admission)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
        strict=True,
        extra="allow",
        frozen=False,
    )


def _checked(check: Any) -> Any:
    def validate(value: str) -> str:
        message = check(value)
        if message is not None:
            raise ValueError(message)
        return value

    return validate


DNSLabel = Annotated[str, AfterValidator(_checked(dns_label_error))]
"""A DNS-1123 label: object, stage and segment names and every reference to another object."""

Topic = Annotated[str, AfterValidator(_checked(topic_error))]
EnvName = Annotated[str, AfterValidator(_checked(env_name_error))]
SecretKey = Annotated[str, AfterValidator(_checked(secret_key_error))]
Timestamp = Annotated[str, AfterValidator(_checked(timestamp_error))]
"""An RFC 3339 timestamp, kept as the string the client sent."""


def _number(value: Any) -> int | float:
    """A JSON number kept as given: ``30`` stays an int, ``0.5`` a float; bools are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _positive(value: Any) -> int | float:
    number = _number(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _non_negative(value: Any) -> int | float:
    number = _number(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _fraction(value: Any) -> int | float:
    number = _number(value)
    if not 0 <= number <= 1:
        raise ValueError("must be between 0 and 1")
    return number


def _at_least_one(value: Any) -> int | float:
    number = _number(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


_NUM = int | float
PositiveNumber = Annotated[float, PlainValidator(_positive, json_schema_input_type=_NUM)]
NonNegativeNumber = Annotated[float, PlainValidator(_non_negative, json_schema_input_type=_NUM)]
Fraction = Annotated[float, PlainValidator(_fraction, json_schema_input_type=_NUM)]
"""A number from 0 to 1 (a share of a drone's capacity)."""
Multiplier = Annotated[float, PlainValidator(_at_least_one, json_schema_input_type=_NUM)]
