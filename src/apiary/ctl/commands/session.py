"""``apiaryctl session create|send|get|transcript|close``: talk to a hive one message at a time.

The HTTP calls live in :class:`SessionCalls` (``run`` uses them too); the commands only parse
arguments and print. Data (ids, tables, JSON) goes to stdout, confirmations to stderr.

Jobs and messages always carry an id chosen here: the server treats a repeated id as the same
request (a job's id is its idempotency key), so when a connection drops after the request was
sent the call is simply made again — it can never start a second job or send a message twice.
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer

from apiary import errors
from apiary.client import ApiClient
from apiary.ctl import output, tables
from apiary.ctl.context import Ctl, get_ctl
from apiary.waggle import new_id

Obj = dict[str, Any]
RETRY_DELAYS = (0.2, 0.5, 1.0)
"""Seconds before each new try of a POST whose answer was lost (it carries an id: safe)."""


def answer_lost(exc: errors.ApiaryError) -> bool:
    """The request may have reached apiaryd, its answer did not come back (a reset, a timeout).
    Not a refused connection: nothing was sent, the server is not there — say so at once."""
    cause = exc.__cause__
    return isinstance(cause, httpx.TransportError) and not isinstance(
        cause, httpx.ConnectError | httpx.ConnectTimeout
    )


def hive_name(target: str) -> str:
    """``hive/NAME`` (or ``hv/NAME``, ``hives/NAME``) or a bare ``NAME`` → NAME."""
    kind, sep, name = target.partition("/")
    if not sep:
        kind, name = "hive", target
    if kind.lower() not in ("hive", "hives", "hv") or not name:
        raise typer.BadParameter(f"{target!r}: expected hive/NAME", param_hint="HIVE")
    return name


def parse_input(text: str, as_json: bool, hint: str = "--json") -> Any:
    """Text stays a string unless ``--json`` asks for it to be parsed."""
    if not as_json:
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"the input is not valid JSON: {exc}", param_hint=hint) from None


class SessionCalls:
    """The sessions API for one client and cell."""

    def __init__(self, client: ApiClient, cell: str) -> None:
        self.client = client
        self.base = f"/api/v1/cells/{quote(cell, safe='')}"

    def path(self, name: str, sub: str = "") -> str:
        p = f"{self.base}/sessions/{quote(name, safe='')}"
        return f"{p}/{sub}" if sub else p

    def create(self, hive: str, name: str | None = None, first: Any = None) -> Obj:
        meta: Obj = {"name": name} if name else {"generateName": f"{hive}-"[:58]}
        spec: Obj = {"hiveRef": hive}
        if first is not None:
            spec["input"] = first
        body = {"kind": "Session", "metadata": meta, "spec": spec}
        return dict(self.client.request("POST", f"{self.base}/sessions", json_body=body).body)

    def get(self, name: str) -> Obj:
        return dict(self.client.request("GET", self.path(name)).body)

    def send(
        self, name: str, payload: Any, *, id: str | None = None, type: str | None = None
    ) -> Obj:
        """Send one message (with ``id``, else a new one: a retry after a lost answer is safe)."""
        body: Obj = {"payload": payload, "id": id or new_id()}
        if type is not None:
            body["type"] = type
        return self.post_again_if_lost(self.path(name, "messages"), body)

    def post_again_if_lost(self, path: str, body: Obj) -> Obj:
        """POST ``body`` (it carries an id, so the server answers a repeat like the first) and
        repeat it, a few times, when the answer is lost on the way."""
        for delay in RETRY_DELAYS:
            try:
                return dict(self.client.request("POST", path, json_body=body).body)
            except errors.Unavailable as exc:
                if not answer_lost(exc):
                    raise
            time.sleep(delay)
        return dict(self.client.request("POST", path, json_body=body).body)

    def poll(self, name: str, after: int, wait: float) -> Obj:
        """Entries after ``after``, waiting up to ``wait`` seconds for the first."""
        params = {"after": str(after), "wait": f"{wait:.3f}"}
        answer = self.client.request(
            "GET", self.path(name, "messages"), params=params, timeout=wait + 15
        )
        return dict(answer.body)

    def transcript(self, name: str) -> Obj:
        return dict(self.client.request("GET", self.path(name, "transcript")).body)

    def close(self, name: str) -> Obj:
        return dict(self.client.request("POST", self.path(name, "close")).body)

    def job(self, hive: str, payload: Any, id: str | None = None) -> Obj:
        """Run a job; ``id`` (else a new one) is its input's id and its idempotency key."""
        body: Obj = {"hive": hive, "input": payload, "id": id or new_id()}
        return self.post_again_if_lost(f"{self.base}/jobs", body)


def calls(ctl: Ctl) -> SessionCalls:
    return SessionCalls(ctl.client(), ctl.cell)


def _print_object(ctl: Ctl, obj: Obj, verb: str | None) -> None:
    name = tables.dig(obj, "metadata", "name")
    if ctl.output == "json":
        output.out(output.dump_json(obj))
    elif ctl.output == "yaml":
        output.out(output.dump_yaml(obj).rstrip("\n"))
    elif ctl.output == "name":
        output.out(f"session/{name}")
    elif verb is not None:
        output.out(f"session/{name} {verb}")
    else:
        cols = tables.columns_for("Session", ctl.output == "wide", False)
        for line in tables.render(tables.table_rows([obj], cols), [c[0] for c in cols]):
            output.out(line)


session_app = typer.Typer(
    help="Create a session with a hive, send it messages, read its transcript, close it.",
    no_args_is_help=True,
)


@session_app.command("create")
def create_command(
    target: Annotated[str, typer.Argument(help="hive/NAME the session talks to.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Session name (default: generated).")
    ] = None,
    input_: Annotated[
        str | None, typer.Option("--input", help="First message, sent at once.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Parse --input as JSON.")] = False,
) -> None:
    """Create a session; prints "session/NAME created" on stdout (-o name: session/NAME)."""
    ctl = get_ctl()
    first = parse_input(input_, as_json) if input_ is not None else None
    _print_object(ctl, calls(ctl).create(hive_name(target), name, first), "created")


@session_app.command("send")
def send_command(
    session: Annotated[str, typer.Argument(help="Session name.")],
    text: Annotated[str, typer.Argument(help="The message (text; see --json).")],
    as_json: Annotated[bool, typer.Option("--json", help="Parse TEXT as JSON.")] = False,
    type_: Annotated[
        str | None, typer.Option("--type", help="Waggle type (task, event …).")
    ] = None,
) -> None:
    """Send one message; prints its id (the final that answers it has it as parent)."""
    ctl = get_ctl()
    sent = calls(ctl).send(session, parse_input(text, as_json, "--json"), type=type_)
    output.out(output.dump_json(sent) if ctl.output == "json" else str(sent["id"]))


@session_app.command("get")
def get_command(session: Annotated[str, typer.Argument(help="Session name.")]) -> None:
    """Show a session (table, or -o yaml|json|name)."""
    ctl = get_ctl()
    _print_object(ctl, calls(ctl).get(session), None)


def _payload_text(payload: Any, width: int = 60) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def usd(cost: Any) -> str:
    """An estimated cost (USD) as the tables show it, to the millionth as the console does;
    ``-`` when there is none (no LLM call, or its model has no price)."""
    if not isinstance(cost, int | float) or isinstance(cost, bool) or cost <= 0:
        return "-"
    if cost < 0.000001:
        return "<$0.000001"
    return "$" + f"{cost:.6f}".rstrip("0").rstrip(".")


def transcript_rows(items: list[Obj]) -> list[list[str]]:
    rows = []
    for e in items:
        latency = e.get("latencyMs")
        usage = e.get("usage") or {}
        tokens = int(usage.get("promptTokens") or 0) + int(usage.get("completionTokens") or 0)
        rows.append(
            [
                str(e.get("seq")),
                str(e.get("kind")),
                e.get("stage") or "-",
                e.get("drone") or "-",
                f"{latency:.1f}ms" if isinstance(latency, int | float) else "-",
                str(tokens) if tokens else "-",
                usd(e.get("costUsd")),
                _payload_text((e.get("message") or {}).get("payload")),
            ]
        )
    return rows


@session_app.command("transcript")
def transcript_command(session: Annotated[str, typer.Argument(help="Session name.")]) -> None:
    """Every entry: SEQ, KIND, STAGE, DRONE, LATENCY, TOKENS, COST, PAYLOAD (or -o json|yaml)."""
    ctl = get_ctl()
    body = calls(ctl).transcript(session)
    if ctl.output == "json":
        output.out(output.dump_json(body))
    elif ctl.output == "yaml":
        output.out(output.dump_yaml(body).rstrip("\n"))
    else:
        header = ["SEQ", "KIND", "STAGE", "DRONE", "LATENCY", "TOKENS", "COST", "PAYLOAD"]
        for line in tables.render(transcript_rows(list(body.get("items") or [])), header):
            output.out(line)
        if not body.get("items"):
            output.info(f"session/{session} has no messages yet.")


@session_app.command("close")
def close_command(session: Annotated[str, typer.Argument(help="Session name.")]) -> None:
    """Close a session: it takes no more messages."""
    ctl = get_ctl()
    obj = calls(ctl).close(session)
    phase = tables.dig(obj, "status", "phase")
    if ctl.output in ("json", "yaml"):
        _print_object(ctl, obj, None)
    else:
        output.out(f"session/{session} {'closed' if phase == 'Closed' else phase}")


def register(app: typer.Typer) -> None:
    app.add_typer(session_app, name="session")
