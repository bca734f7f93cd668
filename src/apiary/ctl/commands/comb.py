"""``apiaryctl comb`` (a session's memory) and ``apiaryctl memory`` (a cell's long-term memory).

    apiaryctl comb get session/chat counter
    apiaryctl comb set session/chat profile '{"name": "Ada"}' --ttl 1h
    apiaryctl comb incr session/chat visits [--by 5]
    apiaryctl comb delete session/chat profile
    apiaryctl comb keys session/chat ['user:*']
    apiaryctl comb clear session/chat
    apiaryctl memory add "the user prefers short answers" --meta source=chat
    apiaryctl memory search "answers" [--limit 5]
    apiaryctl memory delete ID

A VALUE that parses as JSON is stored as that JSON (``5``, ``true``, ``[1,2]``, ``"quoted"``);
anything else is stored as a string (``--string`` forces a string). ``get`` prints strings bare
and other values as JSON, so ``$(apiaryctl comb get …)`` is usable in scripts; ``-o json|yaml``
prints the whole answer.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

import typer

from apiary.ctl import output
from apiary.ctl.context import Ctl, get_ctl, kind_arg
from apiary.ctl.durations import parse_duration

comb_app = typer.Typer(help="Read and write a session's Comb memory.", no_args_is_help=True)
memory_app = typer.Typer(
    help="A cell's long-term memory: add, search, delete.", no_args_is_help=True
)


def _session_name(ref: str) -> str:
    """``session/NAME`` (any spelling of the kind) or a bare ``NAME``."""
    if "/" in ref:
        kind, _, name = ref.partition("/")
        if kind_arg(kind).kind != "Session":
            raise typer.BadParameter(
                f"{ref!r} is not a session: use session/NAME", param_hint="SESSION"
            )
        ref = name
    if not ref:
        raise typer.BadParameter("give the session as session/NAME", param_hint="SESSION")
    return ref


def _session_path(ctl: Ctl, ref: str, rest: str = "") -> str:
    name = _session_name(ref)
    return f"/api/v1/cells/{quote(ctl.cell, safe='')}/sessions/{quote(name, safe='')}/comb{rest}"


def _key(key: str) -> str:
    return "/" + quote(key, safe="")


def _print(ctl: Ctl, body: Any, text: str) -> None:
    if ctl.output == "json":
        output.out(output.dump_json(body))
    elif ctl.output == "yaml":
        output.out(output.dump_yaml(body).rstrip("\n"))
    else:
        output.out(text)


def _show_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def parse_value(text: str, as_string: bool = False) -> Any:
    if as_string:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


@comb_app.command("get")
def comb_get(
    session: Annotated[str, typer.Argument(help="session/NAME")],
    key: Annotated[str, typer.Argument(help="The key.")],
) -> None:
    """Print the value at KEY (exit 1 if it is missing or expired)."""
    ctl = get_ctl()
    body = ctl.client().request("GET", _session_path(ctl, session, _key(key))).body
    _print(ctl, body, _show_value(body["value"]))


@comb_app.command("set")
def comb_set(
    session: Annotated[str, typer.Argument(help="session/NAME")],
    key: Annotated[str, typer.Argument(help="The key.")],
    value: Annotated[str, typer.Argument(help="JSON, or else a string.")],
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Expire after this long (30s, 5m, 1h).")
    ] = None,
    as_string: Annotated[
        bool, typer.Option("--string", help="Store VALUE as a string even if it is JSON.")
    ] = False,
) -> None:
    """Set KEY to VALUE."""
    ctl = get_ctl()
    body: dict[str, Any] = {"value": parse_value(value, as_string)}
    if ttl is not None:
        try:
            body["ttlSeconds"] = parse_duration(ttl)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--ttl'") from None
    answer = ctl.client().request("PUT", _session_path(ctl, session, _key(key)), json_body=body)
    _print(ctl, answer.body, f"{key} set")


@comb_app.command("incr")
def comb_incr(
    session: Annotated[str, typer.Argument(help="session/NAME")],
    key: Annotated[str, typer.Argument(help="The key.")],
    by: Annotated[float, typer.Option("--by", help="How much to add (default 1).")] = 1,
) -> None:
    """Add to the number at KEY atomically and print the new value."""
    ctl = get_ctl()
    amount: int | float = int(by) if float(by).is_integer() else by
    path = _session_path(ctl, session, _key(key) + "/incr")
    body = ctl.client().request("POST", path, json_body={"by": amount}).body
    _print(ctl, body, _show_value(body["value"]))


@comb_app.command("delete")
def comb_delete(
    session: Annotated[str, typer.Argument(help="session/NAME")],
    key: Annotated[str, typer.Argument(help="The key.")],
) -> None:
    """Delete KEY."""
    ctl = get_ctl()
    body = ctl.client().request("DELETE", _session_path(ctl, session, _key(key))).body
    _print(ctl, body, f"{key} deleted")


@comb_app.command("keys")
def comb_keys(
    session: Annotated[str, typer.Argument(help="session/NAME")],
    pattern: Annotated[str, typer.Argument(help="Glob pattern (default *).")] = "*",
) -> None:
    """List the keys (one per line), optionally matching a glob pattern."""
    ctl = get_ctl()
    body = (
        ctl.client().request("GET", _session_path(ctl, session), params={"pattern": pattern}).body
    )
    _print(ctl, body, "\n".join(body["keys"]))
    if ctl.output not in ("json", "yaml"):
        output.info(f"{body['usageBytes']} of {body['limitBytes']} bytes used")


@comb_app.command("clear")
def comb_clear(session: Annotated[str, typer.Argument(help="session/NAME")]) -> None:
    """Forget everything in the session's memory."""
    ctl = get_ctl()
    body = ctl.client().request("DELETE", _session_path(ctl, session)).body
    _print(ctl, body, f"cleared {body['cleared']} keys and lists")


def _memory_path(ctl: Ctl, rest: str = "") -> str:
    return f"/api/v1/cells/{quote(ctl.cell, safe='')}/memory{rest}"


@memory_app.command("add")
def memory_add(
    text: Annotated[str, typer.Argument(help="The text to remember.")],
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="Metadata as key=value (repeatable).")
    ] = None,
) -> None:
    """Remember TEXT in the cell's long-term memory; prints its id."""
    ctl = get_ctl()
    metadata: dict[str, str] = {}
    for item in meta or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise typer.BadParameter(f"{item!r}: use key=value", param_hint="'--meta'")
        metadata[k] = v
    body = (
        ctl.client()
        .request("POST", _memory_path(ctl), json_body={"text": text, "metadata": metadata})
        .body
    )
    _print(ctl, body, body["id"])


@memory_app.command("search")
def memory_search(
    query: Annotated[str, typer.Argument(help="Words to look for.")],
    limit: Annotated[int, typer.Option("--limit", help="At most this many results.")] = 10,
) -> None:
    """Search the cell's long-term memory, most relevant first."""
    ctl = get_ctl()
    params = {"q": query, "limit": str(limit)}
    body = ctl.client().request("GET", _memory_path(ctl, "/search"), params=params).body
    items = body["items"]
    if ctl.output in ("json", "yaml"):
        _print(ctl, items, "")
        return
    if ctl.output == "name":
        output.out("\n".join(i["id"] for i in items))
        return
    if not items:
        output.info("no memory matches")
        return
    rows = [("ID", "SCORE", "TEXT")] + [
        (i["id"], f"{i['score']:.4g}", " ".join(i["text"].split())[:80]) for i in items
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(2)]
    for r in rows:
        output.out(f"{r[0]:<{widths[0]}}   {r[1]:<{widths[1]}}   {r[2]}")


@memory_app.command("delete")
def memory_delete(memory_id: Annotated[str, typer.Argument(help="The id `add` printed.")]) -> None:
    """Forget one remembered text."""
    ctl = get_ctl()
    body = ctl.client().request("DELETE", _memory_path(ctl, "/" + quote(memory_id, safe=""))).body
    _print(ctl, body, f"memory {memory_id} deleted")


def register(app: typer.Typer) -> None:
    app.add_typer(comb_app, name="comb")
    app.add_typer(memory_app, name="memory")
