"""Resource models and admission: pure data and validation, importing nothing of Apiary.

The façade the API uses is :func:`admit`: it checks an object of any kind, applies defaults,
and returns it with warnings about unknown fields; bad input raises :class:`ValidationFailed`
naming each field (``spec.stages[1].agentRef``).
"""

from __future__ import annotations

from apiary.resources.admission import Admission, ValidationFailed, admit
from apiary.resources.registry import API_VERSION, KINDS, KindInfo, kind_by_plural, lookup_kind

__all__ = [
    "API_VERSION",
    "KINDS",
    "Admission",
    "KindInfo",
    "ValidationFailed",
    "admit",
    "kind_by_plural",
    "lookup_kind",
]
