"""Bearer tokens: generation, the stored hash, and the constant-time check.

A token reads ``apiary_<name>_<secret>``: ``<name>`` is the name of its Token object (a DNS-1123
name, so it never holds ``_``), ``<secret>`` 32 random bytes (256 bits, URL-safe base64). The
server finds the Token by name in O(1) and compares the SHA-256 of what was presented with the
stored one in constant time; only that hash is ever stored. A SHA-256 of a 256-bit random secret
needs no salt nor slow hash: there is nothing to guess from a dictionary. The plaintext exists
once, in the answer to the create request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "apiary_"
HASH_SCHEME = "sha256:"
SECRET_BYTES = 32


def hash_token(token: str) -> str:
    """The stored form of a token: ``sha256:<hex>`` of the whole token."""
    return HASH_SCHEME + hashlib.sha256(token.encode()).hexdigest()


def generate_token(name: str) -> tuple[str, str]:
    """A new token for the Token object ``name``: (plaintext, stored hash)."""
    if not name or "_" in name:
        raise ValueError(f"a token name must be non-empty and hold no '_': {name!r}")
    token = f"{PREFIX}{name}_{secrets.token_urlsafe(SECRET_BYTES)}"
    return token, hash_token(token)


def parse_token(token: str) -> str | None:
    """The Token name a presented token claims, or None when it is not in the token format."""
    if not token.startswith(PREFIX):
        return None
    name, sep, secret = token[len(PREFIX) :].partition("_")
    if not name or not sep or len(secret) < 16:
        return None
    return name


def matches(token: str, stored_hash: str) -> bool:
    """Whether ``token`` hashes to ``stored_hash``, compared in constant time."""
    return hmac.compare_digest(hash_token(token).encode(), stored_hash.encode())
