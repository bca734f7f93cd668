"""``continue`` tokens of paginated lists, checked strictly.

A token is where the previous page ended — the (cell, name) of its last object — and which list it
belongs to: the kind, and the cell listed (or ``*`` for a list across all cells). It is opaque to
clients but not secret, and holds nothing a client could not list anyway; what matters is that the
server accepts only what it could have issued. So a token is refused with a 400 naming
``continue`` unless it decodes to exactly that shape, for this list, with names that are DNS-1123
labels — a token made up by hand, cut short, or carried over to another kind or cell never reaches
the backend's scan.

(Kubernetes signs nothing either: its tokens carry a resourceVersion and a key, checked the same
way. An HMAC would need a key every replica shares, which the store does not have.) Names are
checked as DNS-1123 subdomains, a little wider than the labels admission allows, so that a page
can always end at whatever a controller stored.
"""

from __future__ import annotations

import base64
import binascii

import orjson

from apiary.errors import BadRequest, FieldDetail
from apiary.resources.names import DNS1123_SUBDOMAIN, dns_label_error

MAX_TOKEN_CHARS = 512
"""Longer than any token this server issues (kind, two labels of 63 and JSON around them)."""

_VERSION = 1
_ALL_CELLS = "*"


def encode(kind: str, scope: str | None, namespace: str, name: str) -> str:
    """The token for a page of ``kind`` in ``scope`` (None: all cells) that ended at
    (``namespace``, ``name``)."""
    raw = orjson.dumps([_VERSION, kind, _ALL_CELLS if scope is None else scope, namespace, name])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, kind: str, scope: str | None) -> tuple[str, str]:
    """Where the page before ``token`` ended, if ``token`` is one this list could have issued."""
    parts = _parts(token)
    if parts is None:
        raise _refused("not a continue token this server issued")
    version, token_kind, token_scope, namespace, name = parts
    want_scope = _ALL_CELLS if scope is None else scope
    if version != _VERSION or token_kind != kind or token_scope != want_scope:
        raise _refused(f"the token belongs to another list, not to this list of {kind}")
    if namespace and dns_label_error(namespace) is not None:
        raise _refused("not a continue token this server issued")
    if scope is not None and namespace != scope:
        raise _refused("not a continue token this server issued")
    if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):  # names are labels; be lenient
        raise _refused("not a continue token this server issued")
    return namespace, name


def _parts(token: str) -> tuple[int, str, str, str, str] | None:
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        return None
    try:
        value = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not (isinstance(value, list) and len(value) == 5 and isinstance(value[0], int)):
        return None
    if not all(isinstance(part, str) for part in value[1:]):
        return None
    return value[0], value[1], value[2], value[3], value[4]


def _refused(why: str) -> BadRequest:
    message = f"{why}: list again without it, or with the continue of the last page"
    return BadRequest(f"query parameter continue: {message}", [FieldDetail("continue", message)])
