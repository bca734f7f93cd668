"""Who may do what: principals, roles and the one rules table (Kubernetes-shaped RBAC).

A request is ``(verb, kind, cell)``, as every API handler asks it of the authorizer:

- verbs: ``get list watch create update delete`` on objects, ``reveal`` (a Secret's values),
  and subresource verbs ``update/status``, ``get/scale`` ``update/scale``, ``get/logs``
  ``create/logs``, ``get/comb`` ``update/comb`` (a session's Comb memory and lists),
  ``get/dispatches`` (has a dispatch its outcome: what nodes ask on redelivery);
- kinds: the resource kinds plus ``Metrics`` (``GET /metrics``), ``Memory`` (a cell's
  long-term memory), ``DeadLetter`` (a hive's DLQ: ``update`` replays, ``delete`` purges),
  ``AuditLog`` and ``Token``;
- cell: the Cell the request is in, or None for cluster-scoped kinds and lists across all cells.

Roles:

- ``cluster-admin``: everything, everywhere (the bootstrap token in ``<data-dir>/admin.token``).
- ``admin`` (bound to one Cell): everything in that Cell.
- ``developer`` (one Cell): read everything in it (Secrets without their values); write
  AgentSpecs, Hives and Secrets; run sessions (create, send, jobs, events, approvals, Comb);
  replay/purge dead letters; scale; long-term memory read and write; logs.
- ``viewer`` (one Cell): read everything in it but Secret values; logs.
- ``metrics-reader`` (cluster-scoped, no Cell): ``get`` on ``Metrics`` — scraping ``/metrics``
  and nothing else, so a Prometheus server holds no token that can read or change objects.
- ``node`` (one Node, every Cell): what a node agent does (see :data:`NODE_RULES`). Of a Drone
  placed on another node it reads only the name and placement (:func:`placement_only`), and it
  may not write its status; a ``Node`` it may change only under its own name.

No cell role reaches a cluster-scoped kind (Cells, Nodes, Tokens, the audit log) nor a list
across all cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CLUSTER_ADMIN = "cluster-admin"
ADMIN = "admin"
DEVELOPER = "developer"
VIEWER = "viewer"
NODE = "node"
METRICS_READER = "metrics-reader"
CELL_ROLES = (ADMIN, DEVELOPER, VIEWER)
ROLES = (CLUSTER_ADMIN, *CELL_ROLES, NODE, METRICS_READER)
METRICS = "Metrics"
"""The kind a scrape of ``/metrics`` asks ``get`` of (cluster-scoped: no cell)."""
MASTERS = "system:masters"
"""The group of the bootstrap admin: cluster-admin whatever its role field says."""

ANY = "*"
READ = frozenset({"get", "list", "watch"})


@dataclass(frozen=True)
class Rule:
    """``verbs`` on ``kinds``; ``*`` matches any."""

    verbs: frozenset[str]
    kinds: frozenset[str]

    def allows(self, verb: str, kind: str) -> bool:
        return (verb in self.verbs or ANY in self.verbs) and (
            kind in self.kinds or ANY in self.kinds
        )


def rule(verbs: str | frozenset[str], *kinds: str) -> Rule:
    vs = frozenset(verbs.split()) if isinstance(verbs, str) else verbs
    return Rule(vs, frozenset(kinds))


VIEWER_RULES: tuple[Rule, ...] = (
    rule(READ, ANY),  # Secrets listed and read with their values redacted: no "reveal"
    rule("get/logs", "Drone", "Hive"),
    rule("get/scale", "Hive", "AgentSpec"),
    rule("get/comb get/dispatches", "Session"),
)

DEVELOPER_RULES: tuple[Rule, ...] = (
    *VIEWER_RULES,
    rule("create update delete", "AgentSpec", "Hive", "Secret"),
    rule("create update delete update/comb", "Session"),  # run sessions, jobs, approvals
    rule("update delete", "DeadLetter"),  # replay, purge
    rule("update/scale", "Hive", "AgentSpec"),
    rule("create get delete", "Memory"),
    rule("update", "LlmBudget"),  # apiaryctl budget raise
)

ADMIN_RULES: tuple[Rule, ...] = (rule(ANY, ANY),)

NODE_RULES: tuple[Rule, ...] = (
    rule("get create update update/status", "Node"),  # its own (the name is checked)
    rule("get list watch update/status create/logs", "Drone"),
    rule("get", "AgentSpec"),
    rule("get reveal", "Secret"),  # what its drones' env and the LLM gateway need
    rule("get/comb update/comb get/dispatches", "Session"),  # the keeper relays for drones
    rule("create get delete", "Memory"),  # idem; the keeper checks the AgentSpec's spec.memory
    rule("create get", "LlmBudget"),  # the LLM gateway reserves and settles its calls
)

METRICS_READER_RULES: tuple[Rule, ...] = (rule("get", METRICS),)

RULES: dict[str, tuple[Rule, ...]] = {
    ADMIN: ADMIN_RULES,
    DEVELOPER: DEVELOPER_RULES,
    VIEWER: VIEWER_RULES,
    NODE: NODE_RULES,
    METRICS_READER: METRICS_READER_RULES,
}
"""The one table: role → rules. cluster-admin needs none (it may do everything)."""


@dataclass(frozen=True)
class Principal:
    """Who a request comes from. ``role`` None (and not in :data:`MASTERS`) may do nothing."""

    user: str
    groups: tuple[str, ...] = ()
    role: str | None = None
    cell: str | None = None
    """The Cell a cell role is bound to."""
    node: str | None = None
    """The Node a node identity speaks for."""

    @property
    def cluster_admin(self) -> bool:
        return self.role == CLUSTER_ADMIN or MASTERS in self.groups

    def describe(self) -> str:
        """``developer in cell "a"``, ``node "n1"``, ``cluster-admin``, ``no role``."""
        if self.cluster_admin:
            return CLUSTER_ADMIN
        if self.role == NODE:
            return f'node "{self.node}"'
        if self.role in CELL_ROLES:
            return f'{self.role} in cell "{self.cell}"'
        if self.role == METRICS_READER:
            return METRICS_READER
        return "no role"


def allowed(
    principal: Principal, verb: str, kind: str, cell: str | None, name: str | None = None
) -> bool:
    """Whether ``principal`` may ``verb`` ``kind`` in ``cell`` (``name``: the object, when the
    caller knows it; a node may touch only its own Node)."""
    if principal.cluster_admin:
        return True
    role = principal.role
    if role in CELL_ROLES:
        if cell is None or cell != principal.cell:
            return False
    elif role == NODE:
        if kind == "Node" and name is not None and name != principal.node:
            return False
    elif role == METRICS_READER:
        if cell is not None:
            return False
    else:
        return False
    return any(r.allows(verb, kind) for r in RULES[role])


def denial(
    principal: Principal, verb: str, kind: str, cell: str | None, name: str | None = None
) -> str:
    """``user "x" (developer in cell "a") may not delete Cell "b"`` — what a 403 says."""
    what = f'{kind} "{name}"' if name else kind
    where = f' in cell "{cell}"' if cell else (" across all cells" if _celled(kind) else "")
    return f'user "{principal.user}" ({principal.describe()}) may not {verb} {what}{where}'


_CLUSTER_KINDS = frozenset({"Cell", "Node", "Token", "AuditLog", METRICS})


def _celled(kind: str) -> bool:
    return kind not in _CLUSTER_KINDS


def binding_problems(role: str, cell: str | None, node: str | None) -> list[tuple[str, str]]:
    """What is wrong with a token's ``(role, cell, node)``, as (field, message) pairs."""
    if role not in ROLES:
        return [("spec.role", f"{role!r} is not one of {', '.join(ROLES)}")]
    out: list[tuple[str, str]] = []
    if role in CELL_ROLES and not cell:
        out.append(("spec.cell", f"a {role} token is bound to a cell: set spec.cell"))
    if role not in CELL_ROLES and cell:
        out.append(("spec.cell", f"a {role} token is not bound to a cell: leave spec.cell unset"))
    if role == NODE and not node:
        out.append(("spec.node", "a node token speaks for one node: set spec.node"))
    if role != NODE and node:
        out.append(("spec.node", "only a node token names a node (spec.role: node)"))
    return out


# ------------------------------------------------------------- objects a node may see in full

_PLACEMENT_META = ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp")


def placed_elsewhere(principal: Principal, kind: str, obj: dict[str, Any]) -> str | None:
    """For a node and a Drone placed on another node (or on none): that node's name (``""`` for
    none); None when the principal may see the object in full."""
    if principal.role != NODE or kind != "Drone" or principal.cluster_admin:
        return None
    placed = (obj.get("spec") or {}).get("nodeName") or ""
    return None if placed == principal.node else str(placed)


def placement_only(obj: dict[str, Any]) -> dict[str, Any]:
    """What a node sees of another node's Drone: who it is and where it is placed — enough to
    know it is not its own (and to stop it if it ran here before), nothing of its spec."""
    meta = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {k: meta[k] for k in _PLACEMENT_META if k in meta},
        "spec": {"nodeName": (obj.get("spec") or {}).get("nodeName")},
    }


def not_placed_here(principal: Principal, verb: str, obj: dict[str, Any], placed: str) -> str:
    meta = obj.get("metadata") or {}
    where = f'on node "{placed}"' if placed else "on no node"
    return (
        f"{denial(principal, verb, 'Drone', meta.get('namespace'), meta.get('name'))}: "
        f"it is placed {where}"
    )
