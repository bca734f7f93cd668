"""Authentication: a bearer token → a :class:`Principal`, or 401 with the reason.

Two kinds of tokens:

- *static* ones given at start (the bootstrap admin token of ``<data-dir>/admin.token``, an
  embedded node's in-memory token): compared in constant time against each, without early exit;
- *stored* ones (``apiary_<name>_<secret>``, :mod:`apiary.security.tokens`): the Token object
  ``<name>`` is looked up (``lookup``, given by the API: this package knows no store) and the
  presented token's SHA-256 compared with its ``spec.hash`` in constant time; then its expiry
  against the injected clock ``now``.

The middleware runs this on every request, so lookups are cached per name for ``ttl`` seconds
(misses too: a flood of made-up names costs one store read per name per ``ttl``). Creating or
revoking a token through this server calls :meth:`invalidate`; another replica sees a revocation
within ``ttl``. Expiry is checked on every request, cached or not.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apiary.errors import Unauthorized
from apiary.security.roles import Principal
from apiary.security.tokens import matches, parse_token

Obj = dict[str, Any]
Lookup = Callable[[str], Awaitable[Obj | None]]
"""A Token object by name, or None when there is none."""

DEFAULT_TTL = 1.0
MAX_CACHED = 10_000


@dataclass(frozen=True)
class StoredToken:
    name: str
    hash: str
    principal: Principal
    expires_at: datetime | None


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp (``Z`` or an offset) as an aware datetime."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def principal_of(obj: Obj) -> Principal:
    """The identity a Token object grants."""
    name = str((obj.get("metadata") or {}).get("name") or "")
    spec = obj.get("spec") or {}
    role = spec.get("role")
    node = spec.get("node") or None
    user = f"system:node:{node}" if role == "node" else f"token:{name}"
    return Principal(user, (), role, spec.get("cell") or None, node)


def stored_token(obj: Obj) -> StoredToken | None:
    """What the authenticator keeps of a Token object; None when it has no usable hash."""
    spec = obj.get("spec") or {}
    digest = spec.get("hash")
    if not isinstance(digest, str) or not digest:
        return None
    raw = spec.get("expiresAt")
    expires = parse_time(raw) if isinstance(raw, str) and raw else None
    name = str((obj.get("metadata") or {}).get("name") or "")
    return StoredToken(name, digest, principal_of(obj), expires)


class Authenticator:
    """Maps bearer tokens to principals (see the module docstring)."""

    def __init__(
        self,
        tokens: dict[str, Principal] | None = None,
        lookup: Lookup | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        ttl: float = DEFAULT_TTL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens: dict[str, Principal] = dict(tokens or {})
        """Static tokens → principals (the bootstrap admin token and the like)."""
        self.lookup = lookup
        self.now = now
        self.ttl = ttl
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, StoredToken | None]] = {}

    @classmethod
    def admin(cls, token: str, lookup: Lookup | None = None, **kw: Any) -> Authenticator:
        """The bootstrap admin token as cluster-admin, plus stored tokens through ``lookup``."""
        admin = Principal("admin", ("system:masters",), "cluster-admin")
        return cls({token: admin}, lookup, **kw)

    def invalidate(self, name: str | None = None) -> None:
        """Forget the cached Token ``name`` (every one when None)."""
        if name is None:
            self._cache.clear()
        else:
            self._cache.pop(name, None)

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        presented = token.encode()
        found: Principal | None = None
        for known, principal in self.tokens.items():  # no early exit: timing says nothing
            if hmac.compare_digest(presented, known.encode()):
                found = principal
        if found is not None:
            return found
        name = parse_token(token) if self.lookup is not None else None
        if name is None:
            raise Unauthorized("invalid bearer token")
        stored = await self._stored(name)
        if stored is None or not matches(token, stored.hash):
            # One message for both: a different one would tell a guesser which names exist.
            raise Unauthorized(
                f'token "{name}" is not valid: revoked, never issued, or not its secret'
            )
        if stored.expires_at is not None and self.now() >= stored.expires_at:
            when = stored.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise Unauthorized(f'token "{name}" expired at {when}: ask for a new one')
        return stored.principal

    async def _stored(self, name: str) -> StoredToken | None:
        now = self._monotonic()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        assert self.lookup is not None
        obj = await self.lookup(name)
        stored = stored_token(obj) if obj is not None else None
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[name] = (now + self.ttl, stored)
        return stored
