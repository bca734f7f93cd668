"""Deterministic ids: every id the engine makes is derived from what caused it.

Doing a step twice (a router replica retrying after a version conflict, a recovery sweep) must
yield the same ids, so that the journal and the bus's dedupe window drop the copy instead of
running the work twice (docs/sessions.md, "Ids are deterministic").
"""

from __future__ import annotations

import hashlib

ID_LENGTH = 20


def make_id(cause_id: str, stage: str, index: int) -> str:
    """``sha1(cause + "|" + stage + "|" + index)[:20]``.

    ``stage`` is a stage name for dispatches; the engine's own records use names that start with
    ``#`` (``#final``, ``#segment``...), which no DNS-1123 stage name can collide with.
    """
    return hashlib.sha1(f"{cause_id}|{stage}|{index}".encode()).hexdigest()[:ID_LENGTH]
