"""Who is calling and may they: the API's side of :mod:`apiary.security`.

Authentication answers *who* (a :class:`Principal`: the bootstrap admin token, or a stored Token
looked up by name and checked by hash, see :mod:`apiary.security.authn`); :class:`Authorizer`
answers *may they* per verb, kind and cell from the one rules table
(:mod:`apiary.security.roles`). A refusal is a 403 naming the verb, kind and cell; its message is
also kept in the request scope (``DENIED_KEY``) so the audit log records why.
"""

from __future__ import annotations

from apiary.errors import Forbidden
from apiary.security import Authenticator, Principal, allowed, denial

DENIED_KEY = "apiary.denied"


class Authorizer:
    """Decides whether a principal may perform a verb on a kind in a cell."""

    def authorize(
        self,
        principal: Principal,
        verb: str,
        kind: str,
        cell: str | None,
        name: str | None = None,
    ) -> None:
        if principal.cluster_admin or allowed(principal, verb, kind, cell, name):
            return
        raise Forbidden(denial(principal, verb, kind, cell, name))


__all__ = ["DENIED_KEY", "Authenticator", "Authorizer", "Principal"]
