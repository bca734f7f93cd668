"""Small helpers on wire-form objects: owner references, conditions, names, quantities, times.

Everything here is pure (no store access) so the reconcilers stay readable and the rules are
tested once.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from apiary.resources import API_VERSION

Obj = dict[str, Any]

LABEL_HIVE = "apiary.io/hive"
LABEL_STAGE = "apiary.io/stage"
LABEL_AGENTSPEC = "apiary.io/agentspec"
LABEL_TEMPLATE = "apiary.io/template-hash"
LABEL_POOL = "apiary.io/warm-pool"
"""On a drone of a stage's warm pool, instead of ``apiary.io/stage``: the stage it waits for.
Everything that counts a stage's drones by ``apiary.io/stage`` (the Hive's status, ``/scale``,
the autoscaler, ``apiaryctl run``'s diagnosis) therefore sees serving drones only."""

MAX_NAME = 63


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (``Z`` or offset) or epoch seconds; None when absent or malformed."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def short_hash(value: Any, length: int = 8) -> str:
    """A stable hex digest of any JSON value (keys sorted), for names and template hashes."""
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:length]


_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def dns_name(*parts: str, suffix: str = "") -> str:
    """Join parts into a DNS-1123 label of at most 63 characters, keeping ``suffix`` intact.

    Too-long prefixes are cut and get a hash of the full prefix, so two long names that share
    their first characters still map to different objects.
    """
    prefix = _NOT_DNS.sub("-", "-".join(p.lower() for p in parts if p)).strip("-") or "x"
    tail = f"-{suffix}" if suffix else ""
    if len(prefix) + len(tail) > MAX_NAME:
        digest = short_hash(prefix, 5)
        keep = MAX_NAME - len(tail) - len(digest) - 1
        prefix = f"{prefix[:keep].rstrip('-')}-{digest}"
    return prefix + tail


def owner_reference(owner: Obj) -> Obj:
    """The ``ownerReferences`` entry that makes ``owner`` the managing controller."""
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_ref(obj: Obj) -> Obj | None:
    """The ownerReference marked ``controller: true`` (or the only one), if any."""
    refs = [
        r for r in (obj.get("metadata") or {}).get("ownerReferences") or [] if isinstance(r, dict)
    ]
    for ref in refs:
        if ref.get("controller"):
            return ref
    return refs[0] if len(refs) == 1 else None


def is_owned_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == owner["metadata"]["uid"]


def terminating(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def get_condition(obj: Obj, ctype: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == ctype:
            return cond
    return None


def set_condition(
    conditions: list[Obj], ctype: str, status: bool, reason: str, message: str, now: datetime
) -> list[Obj]:
    """A copy of ``conditions`` with one condition set; ``lastTransitionTime`` moves only when
    the status flips, so a resync that changes nothing writes nothing."""
    value = "True" if status else "False"
    out: list[Obj] = []
    found = False
    for cond in conditions:
        if cond.get("type") != ctype:
            out.append(cond)
            continue
        found = True
        changed = cond.get("status") != value
        out.append(
            {
                "type": ctype,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": rfc3339(now) if changed else cond.get("lastTransitionTime"),
            }
        )
    if not found:
        out.append(
            {
                "type": ctype,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": rfc3339(now),
            }
        )
    return out


class QuantityError(ValueError):
    """A resource quantity that cannot be read; the message names the field."""


_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*$")


def parse_cpu(value: Any, field: str) -> int:
    """Millicores. Numbers are millicores, as in the seeds (``500``); strings follow Kubernetes:
    ``"500m"`` is millicores, ``"0.5"`` or ``"2"`` are cores."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise QuantityError(f"{field}: expected millicores, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise QuantityError(f"{field}: must not be negative")
        return value
    if isinstance(value, float):
        if value < 0:
            raise QuantityError(f"{field}: must not be negative")
        return round(value)
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("m") and text[:-1].isdigit():
            return int(text[:-1])
        try:
            number = float(text)
        except ValueError:
            raise QuantityError(
                f"{field}: {value!r} is not a CPU quantity (millicores such as 500 or '500m')"
            ) from None
        if number < 0:
            raise QuantityError(f"{field}: must not be negative")
        return round(number * 1000)
    raise QuantityError(f"{field}: expected millicores, got {type(value).__name__}")


def parse_memory(value: Any, field: str) -> int:
    """Bytes: an integer, or a string with a suffix (``128M``, ``512Mi``, ``2Gi``)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise QuantityError(f"{field}: expected bytes, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise QuantityError(f"{field}: must not be negative")
        return int(value)
    if isinstance(value, str):
        match = _QUANTITY.match(value)
        if match is None or match.group(2) not in _SUFFIXES:
            raise QuantityError(
                f"{field}: {value!r} is not a memory quantity "
                "(bytes, or a number with k/M/G/Ki/Mi/Gi)"
            )
        return int(float(match.group(1)) * _SUFFIXES[match.group(2)])
    raise QuantityError(f"{field}: expected bytes, got {type(value).__name__}")


def requests_of(spec: Obj, field: str = "spec") -> tuple[int, int]:
    """(cpu millicores, memory bytes) requested by a Drone or AgentSpec spec."""
    resources = spec.get("resources") or {}
    requests = resources.get("requests") or {} if isinstance(resources, dict) else {}
    if not isinstance(requests, dict):
        raise QuantityError(f"{field}.resources.requests: must be a mapping")
    return (
        parse_cpu(requests.get("cpu"), f"{field}.resources.requests.cpu"),
        parse_memory(requests.get("memory"), f"{field}.resources.requests.memory"),
    )
