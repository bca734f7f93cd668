"""What a node may read of a Cell's Secrets: only those its own drones use.

A node token reads Secrets with their values (``reveal``): a drone's ``secretKeyRef`` env and
its LLM provider's ``spec.llm.provider.secretRef`` are resolved on the node. Allowed on every
Secret, one compromised node — or an agent that escaped to its node's token — would read every
Cell's credentials. As Kubernetes' node authorizer does, a node may get a Secret only while a
Drone placed on it (``spec.nodeName``) names that Secret; anything else is a 403 that says so.
"""

from __future__ import annotations

from typing import Any

from apiary.api.references import secret_key_refs
from apiary.errors import Forbidden
from apiary.security import Principal
from apiary.security.roles import NODE
from apiary.store import Store

Obj = dict[str, Any]


def secrets_of(drone_spec: Any) -> set[str]:
    """The Secrets a drone's spec names: env ``secretKeyRef``s, its LLM provider's, and its MCP
    servers' ``headersFrom`` (the keeper sends those, docs/interop.md)."""
    names = {name for _, name, _ in secret_key_refs(drone_spec)}
    llm = drone_spec.get("llm") if isinstance(drone_spec, dict) else None
    provider = llm.get("provider") if isinstance(llm, dict) else None
    ref = provider.get("secretRef") if isinstance(provider, dict) else None
    if isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"]:
        names.add(ref["name"])
    servers = drone_spec.get("mcpServers") if isinstance(drone_spec, dict) else None
    for server in servers if isinstance(servers, list) else []:
        for header in (server.get("headersFrom") if isinstance(server, dict) else None) or []:
            ref = header.get("secretKeyRef") if isinstance(header, dict) else None
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
