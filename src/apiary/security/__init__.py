"""Who is calling and what they may do: tokens, roles per Cell, node identities.

Pure: it knows no store, API or server. The API gives :class:`Authenticator` a way to look a
Token object up by name, and asks :func:`allowed` of every request (``apiary.api.auth``).
"""

from apiary.security.authn import Authenticator, Lookup, principal_of, stored_token
from apiary.security.roles import (
    ADMIN,
    CELL_ROLES,
    CLUSTER_ADMIN,
    DEVELOPER,
    NODE,
    ROLES,
    RULES,
    VIEWER,
    Principal,
    Rule,
    allowed,
    binding_problems,
    denial,
)
from apiary.security.tokens import generate_token, hash_token, matches, parse_token

__all__ = [
    "ADMIN",
    "CELL_ROLES",
    "CLUSTER_ADMIN",
    "DEVELOPER",
    "NODE",
    "ROLES",
    "RULES",
    "VIEWER",
    "Authenticator",
    "Lookup",
    "Principal",
    "Rule",
    "allowed",
    "binding_problems",
    "denial",
    "generate_token",
    "hash_token",
    "matches",
    "parse_token",
    "principal_of",
    "stored_token",
]
