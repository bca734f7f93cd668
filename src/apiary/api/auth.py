"""Who is calling and may they: the API's side of :mod:`apiary.security`.

Authentication answers *who* (a :class:`Principal`: the bootstrap admin token, or a stored Token
looked up by name and checked by hash, see :mod:`apiary.security.authn`); :class:`Authorizer`
answers *may they* per verb, kind and cell from the one rules table
(:mod:`apiary.security.roles`). A refusal is a 403 naming the verb, kind and cell; its message is
also kept in the request scope (``DENIED_KEY``) so the audit log records why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apiary.errors import Forbidden
from apiary.security import Authenticator, Principal, allowed, denial
from apiary.security.roles import NODE, not_placed_here, placed_elsewhere, placement_only

Obj = dict[str, Any]

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

    def needs_object(self, principal: Principal, kind: str) -> bool:
        """Whether :meth:`check_object` can refuse anything (a node and a Drone): the caller
        loads the object only then."""
        return principal.role == NODE and kind == "Drone" and not principal.cluster_admin

    def check_object(self, principal: Principal, verb: str, kind: str, obj: Obj) -> None:
        """A node may get or write the status of only the Drones placed on it."""
        placed = placed_elsewhere(principal, kind, obj)
        if placed is not None:
            raise Forbidden(not_placed_here(principal, verb, obj, placed))

    def view(self, principal: Principal, kind: str) -> Callable[[Obj], Obj] | None:
        """How objects of ``kind`` in a list or watch are narrowed for ``principal`` (None: not at
        all — the fast path): a node sees only the placement of other nodes' Drones."""
        if not self.needs_object(principal, kind):
            return None

        def see(obj: Obj) -> Obj:
            return obj if placed_elsewhere(principal, kind, obj) is None else placement_only(obj)

        return see


__all__ = ["DENIED_KEY", "Authenticator", "Authorizer", "Principal"]
