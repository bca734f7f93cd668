"""``apiaryctl dlq list|show|replay|purge hive/NAME [ID|--all]``: a hive's dead-letter queue.

A dead letter is a dispatch that failed every attempt its hive's ``routing.retryPolicy`` allows;
its session holds it until someone decides. ``replay`` puts it back on the bus (fix the agent
first), ``purge`` gives it up (its flow fails with ``DeadLetterPurged``). IDs are the dispatch
ids ``list`` shows. A replay that succeeded settles its letter as ``Resolved``: ``list`` shows the
open ones (Pending, Replayed in flight, Failed) unless ``--all``. Data goes to stdout; hints and
per-item failures to stderr.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer

from apiary.client import ApiClient
from apiary.ctl import output, tables
from apiary.ctl.context import Ctl, get_ctl

Obj = dict[str, Any]
HEADER = ["ID", "SESSION", "STAGE", "REASON", "ATTEMPTS", "AGE", "PHASE"]
OPEN_PHASES = "Pending,Replayed,Failed"
"""What ``dlq list`` shows by default: every phase but Resolved (a replay that succeeded)."""


def hive_of(target: str) -> str:
    """``hive/NAME`` (``hv/``, ``hives/``) → NAME; anything else is a usage error."""
    kind, sep, name = target.partition("/")
    if not sep or kind.lower() not in ("hive", "hives", "hv") or not name or "/" in name:
        raise typer.BadParameter(f"{target!r}: expected hive/NAME", param_hint="HIVE")
    return name


class DlqCalls:
    """The DLQ routes for one client and cell."""

    def __init__(self, client: ApiClient, cell: str, hive: str) -> None:
        self.client = client
        self.base = f"/api/v1/cells/{quote(cell, safe='')}/hives/{quote(hive, safe='')}/dlq"

    def path(self, ident: str | None = None, verb: str | None = None) -> str:
        parts = [self.base, *([quote(ident, safe="")] if ident else []), *([verb] if verb else [])]
        return "/".join(parts)

    def list(self, limit: int | None = None, phases: str | None = None) -> list[Obj]:
        """Every dead letter (in ``phases``, a comma list, when given), newest first (following
        ``continue``), or the newest ``limit``."""
        items: list[Obj] = []
        token: str | None = None
        while True:
            params = {"limit": str(limit or 500)}
            if phases:
                params["phase"] = phases
            if token:
                params["continue"] = token
            body = self.client.request("GET", self.path(), params=params).body
            items += list(body.get("items") or [])
            token = (body.get("metadata") or {}).get("continue")
            if not token or (limit and len(items) >= limit):
                return items[:limit] if limit else items

    def get(self, ident: str) -> Obj:
        return dict(self.client.request("GET", self.path(ident)).body)

    def replay(self, ident: str | None) -> Obj:
        return dict(self.client.request("POST", self.path(ident, "replay")).body)

    def purge(self, ident: str | None) -> Obj:
        return dict(self.client.request("DELETE", self.path(ident)).body)


def _calls(ctl: Ctl, target: str) -> DlqCalls:
    return DlqCalls(ctl.client(), ctl.cell, hive_of(target))


def rows(items: list[Obj], wide: bool, now: datetime | None = None) -> list[list[str]]:
    t = now or datetime.now(UTC)
    out = []
    for o in items:
        spec = o.get("spec") or {}
        row = [
            tables.text(spec.get("dispatch")),
            tables.text(spec.get("session")),
            tables.text(spec.get("stage")),
            tables.text(spec.get("reason")),
            tables.text(spec.get("attempts")),
            tables.age(tables.dig(o, "metadata", "creationTimestamp"), t),
            tables.text(tables.dig(o, "status", "phase")),
        ]
        if wide:
            row.append(" ".join(str(spec.get("message") or "-").split()))
        out.append(row)
    return out


def _dump(ctl: Ctl, doc: Any) -> bool:
    """Print ``doc`` as JSON/YAML when asked; False for the human formats."""
    if ctl.output == "json":
        output.out(output.dump_json(doc))
    elif ctl.output == "yaml":
        output.out(output.dump_yaml(doc).rstrip("\n"))
    else:
        return False
    return True


def _one_or_all(ident: str | None, all_: bool, verb: str) -> None:
    if (ident is not None) != all_:
        return
    what = "an ID or --all, not both" if all_ else "an ID or --all"
    raise typer.BadParameter(f"dlq {verb} needs {what}", param_hint="ID")


dlq_app = typer.Typer(
    help="A hive's dead-letter queue: list, show, replay (after a fix) or purge.",
    no_args_is_help=True,
)

HiveArg = Annotated[str, typer.Argument(help="hive/NAME.", show_default=False)]
IdArg = Annotated[str | None, typer.Argument(help="Dead letter ID (from dlq list).")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead letter of the hive.")]
ListAllOpt = Annotated[
    bool, typer.Option("--all", help="Resolved letters too (a replay that succeeded).")
]


@dlq_app.command("list")
def list_command(
    target: HiveArg,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Only the newest N.", show_default=False)
    ] = None,
    all_: ListAllOpt = False,
) -> None:
    """ID, SESSION, STAGE, REASON, ATTEMPTS, AGE, PHASE — newest first (-o wide adds MESSAGE).

    Open letters only (Pending, Replayed, Failed); --all adds the Resolved ones."""
    ctl = get_ctl()
    items = _calls(ctl, target).list(limit, None if all_ else OPEN_PHASES)
    doc = {"apiVersion": "apiary.io/v1", "kind": "DeadLetterList", "items": items}
    if _dump(ctl, doc):
        return
    if ctl.output == "name":
        for o in items:
            output.out(str(tables.dig(o, "spec", "dispatch")))
        return
    if not items:
        where = f"hive/{hive_of(target)}"
        output.info(
            f"No dead letters in {where}."
            if all_
            else f"No open dead letters in {where} (--all shows resolved ones too)."
        )
        return
    wide = ctl.output == "wide"
    for line in tables.render(rows(items, wide), HEADER + (["MESSAGE"] if wide else [])):
        output.out(line)


def describe(o: Obj) -> list[str]:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    fields = [
        ("ID", spec.get("dispatch")),
        ("Hive", spec.get("hive")),
        ("Session", spec.get("session")),
        ("Stage", spec.get("stage")),
        ("Reason", spec.get("reason")),
        ("Message", spec.get("message")),
        ("Attempts", spec.get("attempts")),
        ("Phase", status.get("phase")),
        ("Replayed", status.get("replayedAt")),
        *_settled(status),
        ("Created", tables.dig(o, "metadata", "creationTimestamp")),
        ("Topic", spec.get("topic")),
    ]
    lines = [f"{k + ':':<10}{tables.text(v)}" for k, v in fields]
    original = output.dump_yaml(spec.get("original") or {}).rstrip("\n")
    return [*lines, "Original:", *("  " + line for line in original.splitlines())]


def _settled(status: Obj) -> list[tuple[str, Any]]:
    """What ``show`` adds once the router settled the replay: when, and why it failed."""
    if status.get("phase") == "Resolved":
        return [("Resolved", status.get("resolvedAt"))]
    if status.get("phase") == "Failed":
        why = f"{status.get('reason')}: {status.get('message')}"
        return [("Failed", status.get("failedAt")), ("Why", why)]
    return []


@dlq_app.command("show")
def show_command(
    target: HiveArg, ident: Annotated[str, typer.Argument(help="Dead letter ID.")]
) -> None:
    """One dead letter: why it died, how often it was tried, and the message itself."""
    ctl = get_ctl()
    obj = _calls(ctl, target).get(ident)
    if _dump(ctl, obj):
        return
    if ctl.output == "name":
        output.out(str(tables.dig(obj, "spec", "dispatch")))
        return
    for line in describe(obj):
        output.out(line)


@dlq_app.command("replay")
def replay_command(target: HiveArg, ident: IdArg = None, all_: AllOpt = False) -> None:
    """Put dead letters back on the bus (a new attempt each); fix the agent first."""
    ctl = get_ctl()
    _one_or_all(ident, all_, "replay")
    calls = _calls(ctl, target)
    if ident is not None:
        obj = calls.replay(ident)
        if not _dump(ctl, obj):
            output.out(f"deadletter/{tables.dig(obj, 'spec', 'dispatch')} replayed")
        return
    result = calls.replay(None)
    if _dump(ctl, result):
        return
    for done in result.get("replayed") or []:
        output.out(f"deadletter/{done} replayed")
    for failed in result.get("failed") or []:
        output.error(f"deadletter/{failed.get('id')}: {failed.get('message')}")
    if not result.get("replayed") and not result.get("failed"):
        output.info(f"Nothing to replay in hive/{hive_of(target)}.")
    if result.get("failed"):
        raise typer.Exit(output.EXIT_FAILED)


@dlq_app.command("purge")
def purge_command(target: HiveArg, ident: IdArg = None, all_: AllOpt = False) -> None:
    """Give dead letters up: each one's flow fails (DeadLetterPurged) and the letter is deleted."""
    ctl = get_ctl()
    _one_or_all(ident, all_, "purge")
    calls = _calls(ctl, target)
    result = calls.purge(ident)
    if _dump(ctl, result):
        return
    purged = [result] if ident is not None else [{"id": i} for i in result.get("purged") or []]
    for done in purged:
        failed = " (its flow failed)" if done.get("flowFailed") else ""
        output.out(f"deadletter/{done['id']} purged{failed}")
    if not purged:
        output.info(f"Nothing to purge in hive/{hive_of(target)}.")


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")
