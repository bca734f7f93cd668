"""``apiaryctl token create|list|revoke``: bearer tokens for people and machines (cluster-admins).

    apiaryctl token create NAME --role developer [-n CELL] [--ttl 24h]   # a cell role
    apiaryctl token create NAME --role cluster-admin [--ttl 30d]
    apiaryctl token create NAME --role metrics-reader           # a Prometheus scraper
    apiaryctl token create NAME --node NODE                              # a node's token
    apiaryctl token list
    apiaryctl token revoke NAME

``create`` prints the token itself — the only time anyone sees it — alone on stdout (so
``T=$(apiaryctl token create ci -n dev --role developer)`` works), what it grants on stderr.
A cell role is bound to the global ``-n/--cell`` (default ``default``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer

from apiary.ctl import output, tables
from apiary.ctl.context import Ctl, get_ctl
from apiary.ctl.durations import parse_duration

Obj = dict[str, Any]
BASE = "/api/v1/tokens"
HEADER = ["NAME", "ROLE", "CELL", "NODE", "EXPIRES", "STATUS", "AGE"]
CELL_ROLES = ("admin", "developer", "viewer")

token_app = typer.Typer(
    help="Bearer tokens: create (shown once), list, revoke. Cluster-admins only.",
    no_args_is_help=True,
)


def body_for(name: str, role: str | None, node: str | None, cell: str, ttl: str | None) -> Obj:
    """The Token to POST for the command-line options (a usage error when they disagree)."""
    if node is not None:
        if role not in (None, "node"):
            raise typer.BadParameter("a node token has role node", param_hint="'--role'")
        spec: Obj = {"role": "node", "node": node}
    elif role is None:
        raise typer.BadParameter(
            "give --role (cluster-admin, admin, developer, viewer) or --node NODE",
            param_hint="'--role'",
        )
    elif role == "node":
        raise typer.BadParameter("a node token needs --node NODE", param_hint="'--node'")
    elif role in CELL_ROLES:
        spec = {"role": role, "cell": cell}
    else:
        spec = {"role": role}
    if ttl is not None:
        try:
            seconds = parse_duration(ttl)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--ttl'") from None
        if seconds <= 0:
            raise typer.BadParameter("must be more than 0", param_hint="'--ttl'")
        spec["ttlSeconds"] = seconds
    return {"apiVersion": "apiary.io/v1", "kind": "Token", "metadata": {"name": name}, "spec": spec}


def grants(obj: Obj) -> str:
    """``developer in cell "dev"``, ``node "n1"``, ``cluster-admin``."""
    spec = obj.get("spec") or {}
    role = spec.get("role")
    if role == "node":
        return f'node "{spec.get("node")}"'
    if role in CELL_ROLES:
        return f'{role} in cell "{spec.get("cell")}"'
    return str(role)


def rows(items: list[Obj], now: datetime | None = None) -> list[list[str]]:
    t = now or datetime.now(UTC)
    return [
        [
            tables.text(tables.dig(o, "metadata", "name")),
            tables.text(tables.dig(o, "spec", "role")),
            tables.text(tables.dig(o, "spec", "cell")),
            tables.text(tables.dig(o, "spec", "node")),
            tables.text(tables.dig(o, "spec", "expiresAt") or "never"),
            tables.text(tables.dig(o, "status", "phase")),
            tables.age(tables.dig(o, "metadata", "creationTimestamp"), t),
        ]
        for o in items
    ]


def _dump(ctl: Ctl, doc: Any) -> bool:
    if ctl.output == "json":
        output.out(output.dump_json(doc))
    elif ctl.output == "yaml":
        output.out(output.dump_yaml(doc).rstrip("\n"))
    else:
        return False
    return True


@token_app.command("create")
def create_command(
    name: Annotated[str, typer.Argument(help="Token name (DNS label).", show_default=False)],
    role: Annotated[
        str | None,
        typer.Option(
            "--role",
            help="cluster-admin, admin, developer, viewer, or metrics-reader (GET /metrics only).",
            show_default=False,
        ),
    ] = None,
    node: Annotated[
        str | None, typer.Option("--node", help="A node token for NODE.", show_default=False)
    ] = None,
    ttl: Annotated[
        str | None,
        typer.Option(
            "--ttl", help="Expire after e.g. 24h, 30d (default: never).", show_default=False
        ),
    ] = None,
) -> None:
    """Create a token and print it (once: only its hash is kept)."""
    ctl = get_ctl()
    body = body_for(name, role, node, ctl.cell, ttl)
    created = dict(ctl.client().request("POST", BASE, json_body=body).body)
    if _dump(ctl, created):
        return
    if ctl.output == "name":
        output.out(f"token/{name}")
        return
    expires = tables.dig(created, "spec", "expiresAt")
    until = f", expires {expires}" if expires else ", never expires"
    output.info(f'token "{name}" created: {grants(created)}{until}. It is shown once; keep it.')
    output.out(str(tables.dig(created, "status", "token")))


@token_app.command("list")
def list_command() -> None:
    """NAME, ROLE, CELL, NODE, EXPIRES, STATUS, AGE — never a secret."""
    ctl = get_ctl()
    items: list[Obj] = []
    cont: str | None = None
    while True:
        params = {"limit": "500", **({"continue": cont} if cont else {})}
        page = ctl.client().request("GET", BASE, params=params).body
        items += list(page.get("items") or [])
        cont = (page.get("metadata") or {}).get("continue")
        if not cont:
            break
    if _dump(ctl, {"apiVersion": "apiary.io/v1", "kind": "TokenList", "items": items}):
        return
    if ctl.output == "name":
        for o in items:
            output.out(f"token/{tables.dig(o, 'metadata', 'name')}")
        return
    if not items:
        output.info("No tokens (the bootstrap admin token is not one: it lives in admin.token).")
        return
    for line in tables.render(rows(items), HEADER):
        output.out(line)


@token_app.command("revoke")
def revoke_command(
    name: Annotated[str, typer.Argument(help="Token name.", show_default=False)],
) -> None:
    """Revoke a token: it stops working at once (401)."""
    ctl = get_ctl()
    ctl.client().request("DELETE", f"{BASE}/{quote(name, safe='')}")
    output.out(f"token/{name} revoked")


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
