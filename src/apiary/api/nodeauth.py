"""What a node may do in a Cell: only what its own drones need.

A node token reads Secrets with their values (``reveal``): a drone's ``secretKeyRef`` env and
its LLM provider's ``spec.llm.provider.secretRef`` are resolved on the node. Allowed on every
Secret, one compromised node — or an agent that escaped to its node's token — would read every
Cell's credentials. As Kubernetes' node authorizer does, a node may get a Secret only while a
Drone placed on it (``spec.nodeName``) names that Secret; anything else is a 403 that says so.

The same holds for what its keeper relays for its drones (:class:`NodeServes`): a node reserves
and settles LLM budgets and records LLM calls only for a Hive one of its drones belongs to, and
looks up recorded calls and reaches Comb and long-term memory only in a Cell where it runs a
drone — else one node could spend, or settle against, any Cell's budgets and read or
write any session's recorded calls and memory. A yes is remembered for :data:`SERVES_TTL`
seconds, since a gateway asks on every LLM call and a drone's placement changes rarely; a no is
never.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from apiary.api.references import secret_key_refs
from apiary.errors import Forbidden
from apiary.security import Principal
from apiary.security.roles import NODE
from apiary.store import Store, parse_selector

Obj = dict[str, Any]
HIVE_LABEL = "apiary.io/hive"
SERVES_TTL = 5.0
"""How long a node's "a drone of mine serves this hive" is remembered (seconds)."""
_MAX_REMEMBERED = 10_000
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def secrets_of(drone_spec: Any) -> set[str]:
    """The Secrets a drone's spec names: env ``secretKeyRef``s, its LLM provider's, and its MCP
    servers' ``headersFrom`` (the keeper sends those) and stdio servers' ``env``
    (docs/interop.md)."""
    names = {name for _, name, _ in secret_key_refs(drone_spec)}
    llm = drone_spec.get("llm") if isinstance(drone_spec, dict) else None
    provider = llm.get("provider") if isinstance(llm, dict) else None
    ref = provider.get("secretRef") if isinstance(provider, dict) else None
    if isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"]:
        names.add(ref["name"])
    servers = drone_spec.get("mcpServers") if isinstance(drone_spec, dict) else None
    for server in servers if isinstance(servers, list) else []:
        server = server if isinstance(server, dict) else {}
        for header in server.get("headersFrom") or []:
            ref = header.get("secretKeyRef") if isinstance(header, dict) else None
            if isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"]:
                names.add(ref["name"])
        for var in server.get("env") or []:  # a stdio server's env, resolved by the node
            source = var.get("valueFrom") if isinstance(var, dict) else None
            ref = source.get("secretKeyRef") if isinstance(source, dict) else None
            if isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"]:
                names.add(ref["name"])
    return names


async def check_node_secret(store: Store, principal: Principal, cell: str, name: str) -> None:
    """Forbidden unless ``principal`` is not a node, or one of its drones in ``cell`` names the
    Secret ``name``."""
    if principal.role != NODE or principal.cluster_admin:
        return
    token: str | None = None
    while True:
        page = await store.list("Drone", cell, limit=500, continue_token=token)
        for drone in page.items:
            spec = drone.get("spec") or {}
            if spec.get("nodeName") == principal.node and name in secrets_of(spec):
                return
        token = page.continue_token
        if not token:
            break
    raise Forbidden(
        f'user "{principal.user}" ({principal.describe()}) may not get Secret "{name}" in cell '
        f'"{cell}": no drone placed on node "{principal.node}" uses it'
    )


async def _drones(store: Store, cell: str, hive: str | None) -> AsyncIterator[Obj]:
    selector = parse_selector(f"{HIVE_LABEL}={hive}") if hive else None
    token: str | None = None
    while True:
        page = await store.list("Drone", cell, limit=500, continue_token=token, selector=selector)
        for drone in page.items:
            yield drone
        token = page.continue_token
        if not token:
            return


class NodeServes:
    """:meth:`check`, with its memory of recent yeses (one per ApiState)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._until: dict[tuple[str, str, str], float] = {}

    async def check(self, store: Store, principal: Principal, cell: str, hive: str | None) -> None:
        """Forbidden unless ``principal`` is not a node, or a drone placed on it runs in
        ``cell`` — of ``hive`` when one is named."""
        if principal.role != NODE or principal.cluster_admin:
            return
        key = (str(principal.node), cell, hive or "")
        now = self.clock()
        if self._until.get(key, 0.0) > now:
            return
        if hive is None or (len(hive) <= 63 and _LABEL.fullmatch(hive)):
            async for drone in _drones(store, cell, hive):
                spec = drone.get("spec") or {}
                if spec.get("nodeName") == principal.node and (
                    hive is None or spec.get("hive") == hive
                ):
                    if len(self._until) >= _MAX_REMEMBERED:
                        self._until.clear()
                    self._until[key] = now + SERVES_TTL
                    return
        scope, of = (f' for hive "{hive}"', " of it") if hive else ("", "")
        raise Forbidden(
            f'user "{principal.user}" ({principal.describe()}) may not act in cell "{cell}"{scope} '
            f"(its LLM budgets, recorded calls, Comb, memory): no drone{of} is placed on node "
            f'"{principal.node}"'
        )
