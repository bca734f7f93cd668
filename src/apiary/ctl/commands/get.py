"""``apiaryctl get``: list or show objects as a table, YAML, JSON or names; ``-w`` streams."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from apiary.client import AsyncApiClient
from apiary.ctl import jsonpath, output, tables, watching
from apiary.ctl.commands.completion import complete_kind, complete_name
from apiary.ctl.context import Ctl, get_ctl, ref, split_ref
from apiary.ctl.durations import parse_duration
from apiary.resources import API_VERSION, KindInfo

Obj = dict[str, Any]


def print_objects(
    ctl: Ctl, info: KindInfo, items: list[Obj], single: bool, all_cells: bool, header: bool = True
) -> None:
    fmt = ctl.output
    if fmt == "name":
        for o in items:
            output.out(ref(o))
    elif fmt == "jsonpath":
        data = items[0] if single else {"apiVersion": API_VERSION, "kind": f"{info.kind}List",
                                        "items": items}  # fmt: skip
        text = jsonpath.render(ctl.template or "", data)
        output.out(text, nl=not text.endswith("\n"))
    elif fmt in ("yaml", "json"):
        doc: Any = (
            items[0]
            if single
            else {"apiVersion": API_VERSION, "kind": f"{info.kind}List", "items": items}
        )
        output.out(output.dump_yaml(doc).rstrip("\n") if fmt == "yaml" else output.dump_json(doc))
    else:
        if info.kind == "Event" and not single:
            items = tables.merge_events(items)
        cols = tables.columns_for(info.kind, fmt == "wide", all_cells and info.namespaced)
        rows = tables.table_rows(items, cols)
        for line in tables.render(rows, [c[0] for c in cols] if header else None):
            output.out(line)


def list_all(
    ctl: Ctl, info: KindInfo, selector: str | None, all_cells: bool, params: dict[str, str]
) -> tuple[list[Obj], str | None]:
    """Every page of the list, and the list's resourceVersion (for a following watch)."""
    client = ctl.client()
    items: list[Obj] = []
    cont: str | None = None
    rv: str | None = None
    while True:
        page = client.list(info, ctl.cell, all_cells, selector, 500, cont, params=params)
        items.extend(page.get("items") or [])
        meta = page.get("metadata") or {}
        rv = meta.get("resourceVersion") or rv
        cont = meta.get("continue") or None
        if not cont:
            return items, rv


def get_command(
    kind: Annotated[
        str,
        typer.Argument(
            help="Kind: singular, plural or short (hive, hives, hv).", autocompletion=complete_kind
        ),
    ],
    name: Annotated[
        str | None,
        typer.Argument(help="Object name (default: list all).", autocompletion=complete_name),
    ] = None,
    selector: Annotated[
        str | None, typer.Option("-l", "--selector", help="Label selector, e.g. app=echo,tier!=x")
    ] = None,
    all_cells: Annotated[
        bool, typer.Option("-A", "--all-cells", "--all-namespaces", help="List across all cells.")
    ] = False,
    watch: Annotated[
        bool, typer.Option("-w", "--watch", help="Stream changes after listing.")
    ] = False,
    watch_timeout: Annotated[
        str | None, typer.Option("--watch-timeout", help="Stop watching after this long (5m).")
    ] = None,
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Secrets: show data values instead of <redacted>.")
    ] = False,
) -> None:
    """Show one object or a list (-o wide adds columns; -w streams changes)."""
    ctl = get_ctl()
    info, name = split_ref(kind, name)
    limit_s = None
    if watch_timeout is not None:
        try:
            limit_s = parse_duration(watch_timeout)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--watch-timeout'") from None
    params = {"reveal": "true"} if reveal else {}
    client = ctl.client()
    if name is not None:
        obj = client.get(info, name, ctl.cell, reveal=reveal)
        items, rv = [obj], (obj.get("metadata") or {}).get("resourceVersion")
        print_objects(ctl, info, items, True, False)
        field = f"metadata.name={name}"
    else:
        items, rv = list_all(ctl, info, selector, all_cells, params)
        if items or ctl.output in ("yaml", "json", "jsonpath"):
            print_objects(ctl, info, items, False, all_cells)
        elif not watch:
            where = "any cell" if all_cells or not info.namespaced else f"cell {ctl.cell!r}"
            output.info(f"No {info.plural} found in {where}.")
        field = None
    if watch:
        stream(ctl, info, name is not None, all_cells, selector, field, rv, limit_s)


def stream(
    ctl: Ctl,
    info: KindInfo,
    single: bool,
    all_cells: bool,
    selector: str | None,
    field: str | None,
    rv: str | None,
    limit_s: float | None,
) -> None:
    """Print each change as it arrives until interrupted (or ``--watch-timeout`` passes: to
    the second, see :mod:`apiary.ctl.watching`)."""
    deadline = None if limit_s is None else time.monotonic() + limit_s

    def show(etype: str, obj: Obj) -> bool:
        if etype == "BOOKMARK":
            return False
        if ctl.output in ("yaml", "json", "jsonpath"):
            print_objects(ctl, info, [obj], True, all_cells)
            if ctl.output == "yaml":
                output.out("---")
        else:
            if ctl.output in ("table", "wide") and etype == "DELETED":
                output.info(f"{ref(obj)} deleted")
            print_objects(ctl, info, [obj], True, all_cells, header=False)
        return False

    async def work(client: AsyncApiClient) -> None:
        await watching.watch(
            client,
            info,
            ctl.cell,
            rv,
            show,
            selector=selector,
            field_selector=field,
            all_cells=all_cells,
        )

    watching.until_deadline(ctl, deadline, work)


def register(app: typer.Typer) -> None:
    app.command("get")(get_command)
