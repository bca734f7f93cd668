"""Name and key syntax shared by every kind, following Kubernetes' rules.

Object names, stage names and references are DNS-1123 labels so that they can appear in
hostnames, topic names and file paths unquoted. Label and annotation keys are Kubernetes
"qualified names" (an optional DNS-1123 subdomain prefix and a slash, then a name of at most 63
characters). Each checker returns an error message, or None when the value is fine, so callers
can collect every problem instead of stopping at the first.
"""

from __future__ import annotations

import re
from datetime import datetime

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_TOPIC = re.compile(r"^[A-Za-z0-9_][-A-Za-z0-9_.]*(/[A-Za-z0-9_][-A-Za-z0-9_.]*)*$")


def dns_label_error(value: str) -> str | None:
    """Why ``value`` is not a DNS-1123 label (object, stage and reference names), or None."""
    if not value:
        return "must not be empty"
    if len(value) > 63 or not DNS1123_LABEL.match(value):
        return (
            f"{value!r} is not a DNS-1123 label "
            "(lower-case letters, digits and '-', starting and ending with a letter or digit, "
            "at most 63 characters)"
        )
    return None


def qualified_name_error(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes qualified name (``prefix/name`` or ``name``), or None.

    Used for label keys, annotation keys and finalizers.
    """
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return f"key {key!r}: the prefix before '/' must not be empty"
        if len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix):
            return f"key {key!r}: prefix {prefix!r} must be a DNS-1123 subdomain"
    if not name:
        return f"key {key!r}: the name part must not be empty"
    if len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return (
            f"key {key!r}: name part must be at most 63 characters of letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit"
        )
    return None


def label_value_error(value: str) -> str | None:
    """Why ``value`` is not a valid label value (empty, or a short qualified name), or None."""
    if value == "":
        return None
    if len(value) > 63 or not _QUALIFIED_NAME.match(value):
        return (
            f"value {value!r} must be empty or at most 63 characters of letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit"
        )
    return None


def env_name_error(value: str) -> str | None:
    """Why ``value`` cannot be an environment variable name, or None."""
    if not _ENV_NAME.match(value):
        return (
            f"{value!r} is not a valid environment variable name "
            "(letters, digits, '_', '-' and '.', not starting with a digit)"
        )
    return None


def secret_key_error(value: str) -> str | None:
    """Why ``value`` cannot be a key of a Secret's data, or None."""
    if len(value) > 253 or not _SECRET_KEY.match(value):
        return (
            f"{value!r} is not a valid secret key "
            "(letters, digits, '-', '_' and '.', at most 253 characters)"
        )
    return None


def topic_error(value: str) -> str | None:
    """Why ``value`` is not a topic name (``events/output``, ``dlq/my-hive``), or None."""
    if len(value) > 255 or not _TOPIC.match(value):
        return (
            f"{value!r} is not a valid topic (segments of letters, digits, '-', '_' and '.' "
            "separated by '/', at most 255 characters)"
        )
    return None


def timestamp_error(value: str) -> str | None:
    """Why ``value`` is not an RFC 3339 timestamp with a time zone, or None."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"{value!r} is not an RFC 3339 timestamp (like 2024-01-02T03:04:05Z)"
    if parsed.tzinfo is None:
        return f"{value!r} needs a time zone (like 2024-01-02T03:04:05Z)"
    return None
