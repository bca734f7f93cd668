"""CPU and memory quantities, normalized to integers.

The seed manifests write plain integers: ``cpu: 500`` means 500 millicores and
``memory: 128000000`` means bytes. Kubernetes users write quantity strings. Both are accepted and
both end up as one integer, so every consumer (scheduler, quota, ``top``) compares plain numbers:

* ``cpu`` → **millicores**. An integer is already millicores (``500`` = half a CPU). A string is a
  Kubernetes quantity in *cores*: ``"500m"`` → 500, ``"0.5"`` → 500, ``"2"`` → 2000.
* ``memory`` → **bytes**. An integer is bytes. A string is a Kubernetes quantity in bytes:
  ``"128Mi"`` → 134217728, ``"1G"`` → 1000000000, ``"1e3"`` → 1000.

Fractions are rounded up to the next whole millicore or byte, as Kubernetes does. Negative values,
booleans and malformed strings are rejected with a message saying what is accepted.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import PlainValidator

_QUANTITY = re.compile(
    r"^(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_MAX = 2**63 - 1


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity string (``"500m"``, ``"128Mi"``, ``"1e3"``) as an exact Decimal."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a quantity (examples: 500m, 0.5, 128Mi, 1G)")
    try:
        number = Decimal(match["num"])
        suffix = match["suffix"] or ""
        if suffix in _BINARY:
            return number * (Decimal(1024) ** _BINARY[suffix])
        if suffix in _DECIMAL:
            return number.scaleb(_DECIMAL[suffix])
        if suffix:
            exponent = int(suffix[1:])
            if abs(exponent) > 60:
                raise ValueError(f"{text!r} is out of range")
            return number.scaleb(exponent)
        return number
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid numbers
        raise ValueError(f"{text!r} is not a quantity") from exc


def _to_int(value: Decimal, what: str) -> int:
    if value < 0:
        raise ValueError(f"must not be negative (got {what})")
    result = math.ceil(value)
    if result > _MAX:
        raise ValueError(f"{what} is too large")
    return int(result)


def _number_or_none(value: Any, unit: str) -> int | None:
    """Integers (and integral floats) are taken as already being in ``unit``."""
    if isinstance(value, bool):
        raise ValueError(f"must be an integer ({unit}) or a quantity string, not a boolean")
    if isinstance(value, int):
        return _to_int(Decimal(value), str(value))
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(
                f"{value!r}: a number here is whole {unit}; "
                'write a quantity string for fractions (like "0.5" or "500m")'
            )
        return _to_int(Decimal(int(value)), repr(value))
    return None


def to_millicores(value: Any) -> int:
    """CPU as millicores: an int is millicores, a string is a quantity in cores."""
    number = _number_or_none(value, "millicores")
    if number is not None:
        return number
    if not isinstance(value, str):
        raise ValueError('must be an integer (millicores) or a quantity string like "500m"')
    return _to_int(parse_quantity(value) * 1000, repr(value))


def to_bytes(value: Any) -> int:
    """Memory as bytes: an int is bytes, a string is a quantity in bytes (``"128Mi"``)."""
    number = _number_or_none(value, "bytes")
    if number is not None:
        return number
    if not isinstance(value, str):
        raise ValueError('must be an integer (bytes) or a quantity string like "128Mi"')
    return _to_int(parse_quantity(value), repr(value))


Millicores = Annotated[int, PlainValidator(to_millicores, json_schema_input_type=int | str)]
"""CPU in millicores; accepts ``500`` or ``"500m"``/``"0.5"``."""

Bytes = Annotated[int, PlainValidator(to_bytes, json_schema_input_type=int | str)]
"""Memory in bytes; accepts ``128000000`` or ``"128Mi"``/``"1G"``."""
