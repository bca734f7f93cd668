"""Kubernetes label selectors: ``a=b,c!=d,e in (x,y),f notin (z),g,!h``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from apiary.errors import BadRequest

_TERM = re.compile(
    r"\s*(?:(?P<not>!)\s*(?P<nkey>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<val>[\w.-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<vals>[^)]*)\))?)\s*(?:,|$)"
)


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case "=":
                return present and value == self.values[0]
            case "!=":
                return not present or value != self.values[0]
            case "in":
                return present and value in self.values
            case "notin":
                return not present or value not in self.values
            case "exists":
                return present
            case _:
                return not present


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)


def parse_selector(text: str | None) -> Selector | None:
    """Parse a selector string; None or empty selects everything. Bad syntax → 400."""
    if not text or not text.strip():
        return None
    reqs: list[Requirement] = []
    pos = 0
    while pos < len(text):
        m = _TERM.match(text, pos)
        if m is None or m.end() == pos:
            raise BadRequest(f"invalid label selector {text!r} at position {pos}")
        pos = m.end()
        if m["nkey"]:
            reqs.append(Requirement(m["nkey"], "!exists"))
        elif m["op"]:
            reqs.append(Requirement(m["key"], "!=" if m["op"] == "!=" else "=", (m["val"],)))
        elif m["setop"]:
            vals = tuple(v.strip() for v in m["vals"].split(",") if v.strip())
            reqs.append(Requirement(m["key"], m["setop"], vals))
        else:
            reqs.append(Requirement(m["key"], "exists"))
    return Selector(tuple(reqs))
