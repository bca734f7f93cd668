"""Token: a bearer credential bound to a role (cluster-scoped, like Kubernetes' ServiceAccount
tokens but stored as objects of their own).

``spec.role`` is ``cluster-admin``, ``admin``/``developer``/``viewer`` (with ``spec.cell``) or
``node`` (with ``spec.node``) or ``metrics-reader`` (scrapes ``/metrics``, nothing else);
``spec.expiresAt`` optional. The server generates the secret,
keeps only its SHA-256 in ``spec.hash`` and answers the plaintext once, on create; reads never
show the hash. Revoking is deleting the object.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from apiary.resources.base import ApiModel, DNSLabel, Timestamp
from apiary.resources.meta import ApiObject

TokenRole = Literal["cluster-admin", "admin", "developer", "viewer", "node", "metrics-reader"]


class TokenSpec(ApiModel):
    role: TokenRole
    cell: DNSLabel | None = None
    """The Cell an admin/developer/viewer token is bound to."""
    node: DNSLabel | None = None
    """The Node a node token speaks for."""
    expires_at: Timestamp | None = None
    description: str | None = Field(default=None, max_length=1024)
    hash: str | None = Field(default=None, max_length=128)
    """``sha256:<hex>`` of the token; set by the server, never shown."""


class Token(ApiObject):
    kind: Literal["Token"]
    spec: TokenSpec
