"""Subject syntax and wildcard matching, shared by every bus backend.

Subjects follow NATS: dot-separated tokens (``apiary.<cell>.<hive>.<stage>.in``). A subscription's
filter may use ``*`` (exactly one token) and ``>`` (one or more trailing tokens). The in-process
bus matches filters itself, so the rules live here — one definition, identical behaviour in both
backends. Bad subjects raise :class:`~apiary.errors.Invalid` naming the field, never a traceback.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from apiary.errors import FieldDetail, Invalid

_BAD_TOKEN_CHARS = re.compile(r"[\s*>]")
_NAME_OK = re.compile(r"[^A-Za-z0-9_-]")
MAX_SUBJECT = 1024


def _invalid(field: str, value: str, why: str) -> Invalid:
    return Invalid(f"invalid {field} {value!r}: {why}", [FieldDetail(field, why)])


def _check_tokens(value: str, field: str, *, wildcards: bool) -> tuple[str, ...]:
    if not isinstance(value, str) or not value:
        raise _invalid(field, str(value), "must be a non-empty string")
    if len(value) > MAX_SUBJECT:
        raise _invalid(field, value[:40] + "…", f"longer than {MAX_SUBJECT} characters")
    tokens = tuple(value.split("."))
    for i, token in enumerate(tokens):
        if not token:
            raise _invalid(field, value, "empty token (leading, trailing or double '.')")
        if wildcards and token == "*":
            continue
        if wildcards and token == ">":
            if i != len(tokens) - 1:
                raise _invalid(field, value, "'>' may only be the last token")
            continue
        if token in ("*", ">"):
            raise _invalid(field, value, "wildcards are not allowed here (publish to a subject)")
        if _BAD_TOKEN_CHARS.search(token):
            why = f"bad character in token {token!r} (no whitespace, '*' or '>' inside a token)"
            raise _invalid(field, value, why)
    return tokens


@lru_cache(maxsize=4096)
def check_subject(subject: str) -> str:
    """A concrete subject to publish on: tokens, no wildcards."""
    _check_tokens(subject, "subject", wildcards=False)
    return subject


@lru_cache(maxsize=1024)
def check_filter(subject: str) -> tuple[str, ...]:
    """A subscription filter; returns its tokens."""
    return _check_tokens(subject, "subject", wildcards=True)


def check_group(group: str) -> str:
    """A queue-group name: any printable text without whitespace, at most 200 characters."""
    if not isinstance(group, str) or not group:
        raise _invalid("group", str(group), "must be a non-empty string")
    if len(group) > 200 or any(c.isspace() for c in group):
        raise _invalid("group", group, "at most 200 characters, no whitespace")
    return group


def matches(filter_tokens: tuple[str, ...], subject: str) -> bool:
    """True if ``subject`` (concrete) matches a filter given as tokens."""
    tokens = subject.split(".")
    n = len(filter_tokens)
    for i, want in enumerate(filter_tokens):
        if want == ">":
            return len(tokens) > i
        if i >= len(tokens):
            return False
        if want != "*" and want != tokens[i]:
            return False
    return len(tokens) == n


def consumer_name(filter_subject: str, group: str) -> str:
    """A JetStream durable name for (filter, group): readable, legal, and collision-free.

    Durable names may not contain ``.``, ``*``, ``>`` or whitespace, so the group is sanitized;
    a short hash of the exact (filter, group) pair keeps two groups that sanitize alike, or one
    group subscribed to two filters, on separate consumers.
    """
    digest = hashlib.sha256(f"{filter_subject}\0{group}".encode()).hexdigest()[:10]
    readable = _NAME_OK.sub("_", group)[:48]
    return f"{readable}_{digest}"


__all__ = ["check_filter", "check_group", "check_subject", "consumer_name", "matches"]
