"""The kinds Apiary knows: their names, plural and short forms, and scope."""

from __future__ import annotations

from dataclasses import dataclass

API_VERSION = "apiary.io/v1"


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    short: tuple[str, ...]
    namespaced: bool

    @property
    def singular(self) -> str:
        return self.kind.lower()


KINDS: tuple[KindInfo, ...] = (
    KindInfo("Cell", "cells", ("cell",), namespaced=False),
    KindInfo("Node", "nodes", ("no",), namespaced=False),
    KindInfo("Secret", "secrets", ("sec",), namespaced=True),
    KindInfo("AgentSpec", "agentspecs", ("as", "spec"), namespaced=True),
    KindInfo("Hive", "hives", ("hv",), namespaced=True),
    KindInfo("Drone", "drones", ("dr",), namespaced=True),
    KindInfo("Session", "sessions", ("sess",), namespaced=True),
    KindInfo("Event", "events", ("ev",), namespaced=True),
    KindInfo("Token", "tokens", ("tok",), namespaced=False),
)

_BY_NAME: dict[str, KindInfo] = {}
for _k in KINDS:
    for _alias in (_k.kind, _k.singular, _k.plural, *_k.short):
        _BY_NAME[_alias.lower()] = _k


def lookup_kind(name: str) -> KindInfo | None:
    """A kind by any of its names (``Hive``, ``hive``, ``hives``, ``hv``), or None."""
    return _BY_NAME.get(name.lower())


def kind_by_plural(plural: str) -> KindInfo | None:
    info = _BY_NAME.get(plural.lower())
    return info if info is not None and info.plural == plural.lower() else None
