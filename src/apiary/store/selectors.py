"""Kubernetes label selectors: ``a=b,c!=d,e in (x,y),f notin (z),g,!h``.

With ``strict`` (a client's ``labelSelector``), keys and values are checked as Kubernetes checks
them (qualified names, label values of at most 63 characters): a selector that no label could
ever match is the client's mistake, a 400 naming ``labelSelector``, not an empty list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from apiary.errors import BadRequest, FieldDetail
from apiary.resources.names import label_value_error, qualified_name_error

MAX_SELECTOR_CHARS = 4096
"""Longest selector accepted (Kubernetes has no bound of its own; its URLs do)."""

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


def parse_selector(text: str | None, *, strict: bool = False) -> Selector | None:
    """Parse a selector string; None or empty selects everything. Bad syntax → 400 (and, when
    ``strict``, keys and values that no label can have)."""
    if not text or not text.strip():
        return None
    if len(text) > MAX_SELECTOR_CHARS:
        raise _invalid(f"longer than {MAX_SELECTOR_CHARS} characters")
    reqs: list[Requirement] = []
    pos = 0
    while pos < len(text):
        m = _TERM.match(text, pos)
        if m is None or m.end() == pos:
            raise _invalid(f"invalid label selector {text!r} at position {pos}")
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
    for req in reqs if strict else ():
        _check(req)
    return Selector(tuple(reqs))


def _check(req: Requirement) -> None:
    problem = qualified_name_error(req.key)
    if problem is not None:
        raise _invalid(f"label {problem}")
    for value in req.values:
        problem = label_value_error(value)
        if problem is not None:
            raise _invalid(f"label {req.key!r}: {problem}")


def _invalid(problem: str) -> BadRequest:
    return BadRequest(
        f"query parameter labelSelector: {problem}", [FieldDetail("labelSelector", problem)]
    )
