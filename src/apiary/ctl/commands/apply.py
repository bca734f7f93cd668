"""``apiaryctl apply``: create or update every object in files, directories or stdin."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from apiary import errors
from apiary.ctl import output
from apiary.ctl.context import Ctl, get_ctl, ref
from apiary.ctl.manifests import (
    Document,
    ManifestError,
    apply_order,
    collect_files,
    read_documents,
)


def load_or_fail(files: list[str], recursive: bool) -> list[Document]:
    try:
        return read_documents(files, recursive)
    except ManifestError as exc:
        output.error(str(exc))
        raise typer.Exit(output.EXIT_FAILED) from None


def say_what_is_empty(files: list[str], recursive: bool, docs: list[Document]) -> bool:
    """Name each file that holds no object (empty, only comments or ``---``); False, after an
    error, when none of them holds any (as ``kubectl apply``: nothing to apply is a failure)."""
    sources = {d.source for d in docs}
    read = ["<stdin>" if f == "-" else f for f in collect_files(files, recursive)]
    empty = [f for f in read if f not in sources]
    if not docs:
        output.error(f"no objects to apply in {', '.join(read)} (empty, or only comments)")
        return False
    for f in empty:
        output.warn(f"{f}: no objects in it (empty, or only comments)")
    return True


def with_cell(ctl: Ctl, obj: dict[str, Any]) -> dict[str, Any]:
    """Cell-scoped objects without ``metadata.namespace`` go to ``-n`` (default ``default``)."""
    from apiary.resources import lookup_kind

    info = lookup_kind(str(obj.get("kind", "")))
    meta = obj.get("metadata")
    if (
        info is not None
        and info.namespaced
        and isinstance(meta, dict)
        and not meta.get("namespace")
    ):
        return {**obj, "metadata": {**meta, "namespace": ctl.cell}}
    return obj


def report_failure(doc: Document, exc: errors.ApiaryError) -> None:
    what = f" ({ref(doc.obj)})" if doc.obj else ""
    output.error(f"{doc.where}{what}: {exc.message}", exc.details)


def apply_command(
    files: Annotated[
        list[str],
        typer.Option("-f", "--filename", help="File, directory or - (stdin); repeatable."),
    ],
    recursive: Annotated[
        bool, typer.Option("-R", "--recursive", help="Descend into subdirectories.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate on the server, store nothing.")
    ] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Unknown fields are errors, not warnings.")
    ] = False,
) -> None:
    """Create or update the objects in files, directories or stdin (Cells, Secrets, AgentSpecs,
    Hives first). A bad document is reported with file, document and field; the rest are still
    applied, and the exit code is 1."""
    ctl = get_ctl()
    docs = apply_order(load_or_fail(files, recursive))
    if not say_what_is_empty(files, recursive, docs):
        raise typer.Exit(output.EXIT_FAILED)
    client = ctl.client()
    client.on_warning = None  # warnings are printed per object below
    failed = 0
    suffix = " (dry run)" if dry_run else ""
    for doc in docs:
        if doc.obj is None:
            output.error(f"{doc.where}: {doc.error}")
            failed += 1
            continue
        try:
            action, stored, warnings = client.apply(with_cell(ctl, doc.obj), dry_run, strict)
        except (errors.Unavailable, errors.Unauthorized):
            raise
        except errors.ApiaryError as exc:
            report_failure(doc, exc)
            failed += 1
            continue
        for w in warnings:
            output.warn(f"{ref(doc.obj)}: {w}")
        if ctl.output == "yaml":
            output.out("---\n" + output.dump_yaml(stored).rstrip("\n"))
        elif ctl.output == "json":
            output.out(output.dump_json(stored))
        else:
            output.out(f"{ref(stored or doc.obj)} {action}{suffix}")
    if failed:
        output.error(f"{failed} of {len(docs)} document(s) failed")
        raise typer.Exit(output.EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("apply")(apply_command)
