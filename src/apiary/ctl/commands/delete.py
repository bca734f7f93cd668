"""``apiaryctl delete``: by kind and name(s), or every object in manifests (in reverse order)."""

from __future__ import annotations

from typing import Annotated

import typer

from apiary import errors
from apiary.client import name_and_cell
from apiary.ctl import output
from apiary.ctl.commands.apply import load_or_fail, report_failure, with_cell
from apiary.ctl.commands.completion import complete_kind, complete_name
from apiary.ctl.context import get_ctl, ref, split_ref
from apiary.ctl.manifests import apply_order
from apiary.resources import KindInfo, lookup_kind


def delete_command(
    kind: Annotated[
        str | None, typer.Argument(help="Kind (or KIND/NAME).", autocompletion=complete_kind)
    ] = None,
    names: Annotated[
        list[str] | None, typer.Argument(help="Object name(s).", autocompletion=complete_name)
    ] = None,
    files: Annotated[
        list[str] | None, typer.Option("-f", "--filename", help="Delete what these files define.")
    ] = None,
    recursive: Annotated[bool, typer.Option("-R", "--recursive")] = False,
    ignore_not_found: Annotated[
        bool, typer.Option("--ignore-not-found", help="A missing object is not an error.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Store nothing.")] = False,
) -> None:
    """Delete objects; their dependents (ownerReferences) go with them."""
    ctl = get_ctl()
    client = ctl.client()
    params = {"dryRun": "All"} if dry_run else None
    suffix = " (dry run)" if dry_run else ""
    targets: list[tuple[KindInfo, str, str | None, str]] = []  # kind, name, cell, where
    failed = 0
    if files:
        if kind is not None:
            raise typer.BadParameter("give either -f FILE or KIND NAME, not both")
        for doc in reversed(apply_order(load_or_fail(files, recursive))):
            if doc.obj is None:
                output.error(f"{doc.where}: {doc.error}")
                failed += 1
                continue
            obj = with_cell(ctl, doc.obj)
            obj_name, cell = name_and_cell(obj)
            known = lookup_kind(str(obj.get("kind", "")))
            if known is None or not obj_name:
                report_failure(doc, errors.Invalid("needs a known kind and metadata.name"))
                failed += 1
                continue
            targets.append((known, obj_name, cell, doc.where))
    elif kind is not None:
        info, first = split_ref(kind, None)
        all_names = ([first] if first else []) + list(names or [])
        if not all_names:
            raise typer.BadParameter("give at least one NAME (or -f FILE)", param_hint="NAME")
        targets = [(info, n, ctl.cell, "") for n in all_names]
    else:
        raise typer.BadParameter("give KIND NAME or -f FILE")
    for info, n, cell, where in targets:
        try:
            body = client.request("DELETE", client.path(info, n, cell), params=params).body
        except errors.NotFound as exc:
            if ignore_not_found:
                continue
            output.error(f"{where + ': ' if where else ''}{exc.message}")
            failed += 1
            continue
        except (errors.Unavailable, errors.Unauthorized):
            raise
        except errors.ApiaryError as exc:
            output.error(
                f"{where + ': ' if where else ''}{ref(info, n)}: {exc.message}", exc.details
            )
            failed += 1
            continue
        meta = (body.get("metadata") or {}) if isinstance(body, dict) else {}
        pending = bool(meta.get("deletionTimestamp") and meta.get("finalizers"))
        state = "marked for deletion (finalizers remain)" if pending else "deleted"
        output.out(f"{ref(info, n)} {state}{suffix}")
    if failed:
        raise typer.Exit(output.EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("delete")(delete_command)
