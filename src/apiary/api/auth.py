"""Who is calling: bearer tokens, compared in constant time.

Authentication answers *who* (a :class:`Principal`); :class:`Authorizer` answers *may they* per
verb, kind and cell. Today there is one admin token and the admin may do everything; per-Cell roles
(admin/developer/viewer) plug in by giving the authenticator more tokens and the authorizer rules,
without touching the handlers.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from apiary.errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class Principal:
    user: str
    groups: tuple[str, ...] = ()


@dataclass
class Authenticator:
    """Maps bearer tokens to principals. Every comparison is constant-time."""

    tokens: dict[str, Principal] = field(default_factory=dict)

    @classmethod
    def admin(cls, token: str) -> Authenticator:
        return cls({token: Principal("admin", ("system:masters",))})

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        presented = token.strip().encode()
        found: Principal | None = None
        for known, principal in self.tokens.items():  # no early exit: timing says nothing
            if hmac.compare_digest(presented, known.encode()):
                found = principal
        if found is None:
            raise Unauthorized("invalid bearer token")
        return found


class Authorizer:
    """Decides whether a principal may perform a verb on a kind in a cell."""

    def authorize(self, principal: Principal, verb: str, kind: str, cell: str | None) -> None:
        if "system:masters" in principal.groups:
            return
        where = f" in cell {cell!r}" if cell else ""
        raise Forbidden(f"user {principal.user!r} may not {verb} {kind}{where}")
