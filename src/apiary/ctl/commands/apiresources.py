"""``apiaryctl api-resources``: the kinds the server serves, from its discovery (``/api/v1``).

As ``kubectl api-resources``: NAME, SHORTNAMES, APIVERSION, NAMESPACED, KIND (``-o wide`` adds
VERBS; ``-o name`` prints the plurals; ``-o json|yaml`` the server's ``APIResourceList``).
Subresources (``hives/status``, ``hives/scale`` …) are left out of the table.
"""

from __future__ import annotations

from typing import Any

import typer

from apiary.ctl import output, tables
from apiary.ctl.context import get_ctl

Obj = dict[str, Any]


def api_resources_command() -> None:
    """List the kinds the server serves (its API discovery at /api/v1)."""
    ctl = get_ctl()
    body: Obj = dict(ctl.client().request("GET", "/api/v1").body)
    if ctl.output == "json":
        output.out(output.dump_json(body))
        return
    if ctl.output == "yaml":
        output.out(output.dump_yaml(body).rstrip("\n"))
        return
    version = str(body.get("groupVersion") or "")
    kinds = [r for r in body.get("resources") or [] if "/" not in str(r.get("name"))]
    if ctl.output == "name":
        for r in kinds:
            output.out(str(r.get("name")))
        return
    header = ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    if ctl.output == "wide":
        header.append("VERBS")
    rows = []
    for r in kinds:
        row = [
            tables.text(r.get("name")),
            ",".join(r.get("shortNames") or []),
            version,
            tables.text(bool(r.get("namespaced"))),
            tables.text(r.get("kind")),
        ]
        if ctl.output == "wide":
            row.append(",".join(r.get("verbs") or []))
        rows.append(row)
    for line in tables.render(rows, header):
        output.out(line)


def register(app: typer.Typer) -> None:
    app.command("api-resources")(api_resources_command)
