"""``apiaryctl patch``: change a few fields of an object without sending all of it back.

As ``kubectl patch``: ``--type merge`` (the default; RFC 7386: the fields to set, ``null`` to
delete one) or ``--type json`` (RFC 6902: a list of operations). The server applies the patch
and admits the result like any update, so ``-p`` needs only what changes, and a patch that says
``metadata.resourceVersion`` is applied only to that version. The patch is JSON or, for the
convenience of a shell, YAML (``-p '{spec: {paused: true}}'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
import yaml

from apiary.ctl import output
from apiary.ctl.commands.completion import complete_kind, complete_name
from apiary.ctl.context import get_ctl, ref, split_ref
from apiary.resources import yaml_bounds

CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}


def parse_patch(text: str, kind: str) -> Any:
    """The patch document from ``-p``: JSON, else YAML; a usage error when it is neither, or
    not the shape ``--type`` asks for."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            doc = yaml_bounds.load(text)
        except yaml.YAMLError as exc:
            raise typer.BadParameter(f"not JSON or YAML: {exc}", param_hint="'-p'") from None
    want = dict if kind == "merge" else list
    if not isinstance(doc, want):
        shape = "an object of the fields to change" if kind == "merge" else "a list of operations"
        raise typer.BadParameter(f"a --type {kind} patch is {shape}", param_hint="'-p'")
    return doc


def patch_command(
    target: Annotated[
        str, typer.Argument(help="KIND NAME or KIND/NAME.", autocompletion=complete_kind)
    ],
    name: Annotated[
        str | None,
        typer.Argument(help="Name, when KIND is given apart.", autocompletion=complete_name),
    ] = None,
    patch: Annotated[
        str | None, typer.Option("-p", "--patch", help="The patch, JSON or YAML.")
    ] = None,
    patch_file: Annotated[
        Path | None, typer.Option("--patch-file", help="Read the patch from a file.")
    ] = None,
    patch_kind: Annotated[
        str, typer.Option("--type", help="merge (RFC 7386) or json (RFC 6902).")
    ] = "merge",
    subresource: Annotated[
        str | None, typer.Option("--subresource", help="status: patch the status instead.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show, store nothing.")] = False,
) -> None:
    """Patch an object: apiaryctl patch hive h -p '{"spec": {"stages": [...]}}'."""
    ctl = get_ctl()
    info, obj_name = split_ref(target, name)
    if not obj_name:
        raise typer.BadParameter("patch needs KIND NAME or KIND/NAME", param_hint="TARGET")
    if patch_kind not in CONTENT_TYPES:
        raise typer.BadParameter(f"{patch_kind!r} is not merge or json", param_hint="'--type'")
    if subresource not in (None, "status"):
        raise typer.BadParameter("only status can be patched", param_hint="'--subresource'")
    if (patch is None) == (patch_file is None):
        raise typer.BadParameter("give the patch with -p or --patch-file", param_hint="'-p'")
    text = patch if patch is not None else Path(patch_file or "").read_text()
    doc = parse_patch(text, patch_kind)
    client = ctl.client()
    path = client.path(info, obj_name, ctl.cell, sub=subresource)
    # ApiClient.request sends every body as application/json; a PATCH must say its format
    try:
        resp = client._http.request(
            "PATCH",
            path,
            content=orjson.dumps(doc),
            headers={"Content-Type": CONTENT_TYPES[patch_kind]},
            params={"dryRun": "All"} if dry_run else None,
        )
    except httpx.HTTPError as exc:
        raise client._transport_error(exc) from exc
    stored: dict[str, Any] = client._answer(resp).body
    if ctl.output == "yaml":
        output.out(output.dump_yaml(stored).rstrip("\n"))
    elif ctl.output == "json":
        output.out(output.dump_json(stored))
    elif ctl.output == "name":
        output.out(ref(info, obj_name))
    else:
        output.out(f"{ref(info, obj_name)} patched" + (" (dry run)" if dry_run else ""))


def register(app: typer.Typer) -> None:
    app.command("patch")(patch_command)
