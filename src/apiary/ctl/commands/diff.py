"""``apiaryctl diff``: what ``apply`` would change, as a unified diff of server vs local.

The "local" side is what the server *would* store (a dry-run create/update), so defaults and
server-managed fields never show up as changes. Secret values are compared but never printed.
Exit codes: 0 no change, 1 changes, 2 (or 3 for connectivity/auth) on error.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any

import typer

from apiary import errors
from apiary.client import ApiClient, is_secret, normalized
from apiary.ctl import output
from apiary.ctl.commands.apply import load_or_fail, report_failure, with_cell
from apiary.ctl.context import get_ctl, ref
from apiary.ctl.manifests import apply_order

Obj = dict[str, Any]


def _mask(live: Obj | None, merged: Obj) -> tuple[Obj | None, Obj]:
    """Replace Secret values: ``<redacted>`` when unchanged, ``<redacted: changed>`` otherwise."""
    before = dict((live or {}).get("data") or {})
    after = dict(merged.get("data") or {})
    if live is not None and "data" in live:
        live = {**live, "data": {k: "<redacted>" for k in before}}
    masked = {
        k: "<redacted>" if before.get(k) == v else "<redacted: changed>" for k, v in after.items()
    }
    if "data" in merged:
        merged = {**merged, "data": masked}
    return live, merged


def would_store(client: ApiClient, obj: Obj) -> tuple[Obj | None, Obj]:
    """(live object or None, what applying ``obj`` would store), both normalised."""
    reveal = {"reveal": "true"} if is_secret(obj) else {}
    try:
        live: Obj | None = client.request("GET", client.obj_path(obj), params=reveal or None).body
    except errors.NotFound:
        live = None
    params = {"dryRun": "All"} | reveal
    if live is None:
        merged = client.request(
            "POST", client.obj_path(obj, name=False), params=params, json_body=obj
        ).body
    else:
        merged = client.request("PUT", client.obj_path(obj), params=params, json_body=obj).body
    live_n = normalized(live) if live is not None else None
    merged_n = normalized(merged)
    if is_secret(obj):
        live_n, merged_n = _mask(live_n, merged_n)
    return live_n, merged_n


def diff_command(
    files: Annotated[list[str], typer.Option("-f", "--filename", help="File, directory or -.")],
    recursive: Annotated[bool, typer.Option("-R", "--recursive")] = False,
) -> None:
    """Show how the server's objects differ from the manifests; exit 1 when they do."""
    ctl = get_ctl()
    client = ctl.client()
    client.on_warning = None
    changed = errored = False
    try:
        docs = apply_order(load_or_fail(files, recursive))
    except typer.Exit:
        raise typer.Exit(output.EXIT_USAGE) from None
    for doc in docs:
        if doc.obj is None:
            output.error(f"{doc.where}: {doc.error}")
            errored = True
            continue
        obj = with_cell(ctl, doc.obj)
        try:
            live, merged = would_store(client, obj)
        except (errors.Unavailable, errors.Unauthorized):
            raise
        except errors.ApiaryError as exc:
            report_failure(doc, exc)
            errored = True
            continue
        a = output.dump_yaml(live).splitlines(keepends=True) if live is not None else []
        b = output.dump_yaml(merged).splitlines(keepends=True)
        name = ref(obj)
        lines = list(difflib.unified_diff(a, b, f"live/{name}", f"local/{name}"))
        if lines:
            changed = True
            for line in lines:
                output.out(line.rstrip("\n"))
    if errored:
        raise typer.Exit(output.EXIT_USAGE)
    if changed:
        raise typer.Exit(output.EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("diff")(diff_command)
