"""``apiaryctl describe``: a human summary of one object, its conditions and its Events."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from apiary import errors
from apiary.ctl import output, tables
from apiary.ctl.commands.completion import complete_kind, complete_name
from apiary.ctl.context import Ctl, get_ctl, split_ref
from apiary.resources import KindInfo
from apiary.resources.llm import merged_llm

Obj = dict[str, Any]
_SKIP_TOP = ("apiVersion", "kind", "metadata", "status")


AGENTSPEC_LABEL = "apiary.io/agentspec"
"""The label every drone of an AgentSpec carries (set by the controllers)."""


def _mapping(title: str, value: Any) -> list[str]:
    if not isinstance(value, dict) or not value:
        return [f"{title:<14}<none>"]
    lines = []
    for i, (k, v) in enumerate(value.items()):
        lines.append(f"{(title if i == 0 else ''):<14}{k}={v}")
    return lines


def _block(title: str, value: Any) -> list[str]:
    """``Title:`` then the value as indented YAML (complete: nothing is summarised away)."""
    dumped = output.dump_yaml(value).rstrip("\n")
    return [f"{title}:"] + ["  " + line for line in dumped.splitlines()]


def _secret_data(obj: Obj) -> list[str]:
    data = obj.get("data") or {}
    lines = ["Data:"]
    if not isinstance(data, dict) or not data:
        return [*lines, "  <none>"]
    for key, value in data.items():
        try:
            size = f"{len(base64.b64decode(str(value), validate=True))} bytes"
        except (binascii.Error, ValueError):
            size = "<redacted>"
        lines.append(f"  {key}: {size}")
    return lines


def summary(obj: Obj, now: datetime) -> list[str]:
    meta = obj.get("metadata") or {}
    created = meta.get("creationTimestamp")
    lines = [f"{'Name:':<14}{meta.get('name', '-')}", f"{'Kind:':<14}{obj.get('kind', '-')}"]
    if meta.get("namespace"):
        lines.append(f"{'Cell:':<14}{meta['namespace']}")
    lines += _mapping("Labels:", meta.get("labels"))
    lines += _mapping("Annotations:", meta.get("annotations"))
    lines.append(f"{'Created:':<14}{created or '-'} ({tables.age(created, now)} ago)")
    for key, label in (
        ("uid", "UID:"),
        ("resourceVersion", "Version:"),
        ("generation", "Generation:"),
    ):
        if meta.get(key) is not None:
            lines.append(f"{label:<14}{meta[key]}")
    owners = meta.get("ownerReferences") or []
    if owners:
        lines.append(
            f"{'Owned by:':<14}"
            + ", ".join(f"{str(o.get('kind', '?')).lower()}/{o.get('name', '?')}" for o in owners)
        )
    if meta.get("finalizers"):
        lines.append(f"{'Finalizers:':<14}{', '.join(meta['finalizers'])}")
    if meta.get("deletionTimestamp"):
        lines.append(f"{'Deleting:':<14}since {meta['deletionTimestamp']}")
    for key, value in obj.items():
        if key in _SKIP_TOP:
            continue
        if obj.get("kind") == "Secret" and key == "data":
            lines += _secret_data(obj)
        else:
            lines += _block(key[:1].upper() + key[1:], value)
    return lines + _isolation(obj) + _quota(obj) + _llm_usage(obj) + _status(obj, now)


def _llm_usage(obj: Obj) -> list[str]:
    """A Cell's or Hive's ``status.usage`` on one line: the tokens its LLM calls used and their
    estimated cost (``<none>`` before its first call is counted)."""
    if obj.get("kind") not in ("Cell", "Hive"):
        return []
    usage = tables.dig(obj, "status", "usage", default=None)
    if not isinstance(usage, dict):
        return [f"{'LLM usage:':<14}<none>"]
    return [f"{'LLM usage:':<14}{usage.get('totalTokens', 0)} tokens "
            f"({usage.get('promptTokens', 0)} prompt + {usage.get('completionTokens', 0)} "
            f"completion), ${float(usage.get('costUsd') or 0):.6f} estimated"]  # fmt: skip


def _used(used: dict[str, Any], key: str) -> Any:
    """``status.used`` under the quota's own name (``maxCPU``) or what it counts (``cpu``)."""
    counted = key[3:] if key.startswith("max") else key
    for k in (key, counted, counted[:1].lower() + counted[1:], counted.lower()):
        if k in used:
            return used[k]
    return None


def _quota(obj: Obj) -> list[str]:
    """A Cell's quota as RESOURCE USED LIMIT rows, ``used`` from ``status.used`` (``-`` when
    nothing reports it)."""
    if obj.get("kind") != "Cell":
        return []
    quota = tables.dig(obj, "spec", "resourceQuota", default={}) or {}
    if not isinstance(quota, dict) or not quota:
        return [f"{'Quota:':<14}<none>"]
    used = tables.dig(obj, "status", "used", default={}) or {}
    used = used if isinstance(used, dict) else {}
    rows = [[k, tables.text(_used(used, k)), tables.text(v)] for k, v in quota.items()]
    return ["Quota:"] + ["  " + line for line in tables.render(rows, ["RESOURCE", "USED", "LIMIT"])]


def _isolation(obj: Obj) -> list[str]:
    """A Drone's confinement on its node (``status.isolation``, docs/security.md) on one line:
    which user it runs as and what enforces each limit."""
    iso = (obj.get("status") or {}).get("isolation") if obj.get("kind") == "Drone" else None
    if not isinstance(iso, dict) or not iso:
        return []
    order = ("user", "memory", "cpu", "workingDir", "home")
    keys = [k for k in order if k in iso] + [k for k in iso if k not in order]
    return [f"{'Isolation:':<14}" + ", ".join(f"{k} {iso[k]}" for k in keys)]


def _status(obj: Obj, now: datetime) -> list[str]:
    status = obj.get("status") or {}
    if not isinstance(status, dict) or not status:
        return ["Status:       <none>"]
    rest = {k: v for k, v in status.items() if k != "conditions"}
    lines = _block("Status", rest) if rest else []
    conds = status.get("conditions") or []
    lines.append("Conditions:")
    if not conds:
        return [*lines, "  <none>"]
    header = ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]
    rows = [
        [
            tables.text(c.get("type")),
            tables.text(c.get("status")),
            tables.text(c.get("reason")),
            tables.age(c.get("lastTransitionTime"), now),
            tables.text(c.get("message")),
        ]
        for c in conds
        if isinstance(c, dict)
    ]
    return lines + ["  " + line for line in tables.render(rows, header)]


def events_for(ctl: Ctl, info: KindInfo, name: str, now: datetime) -> list[str]:
    """The object's Events, oldest first; a failure to list them does not fail describe."""
    params = {"involvedObject.kind": info.kind, "involvedObject.name": name}
    try:
        listed = ctl.client().list("events", ctl.cell, not info.namespaced, params=params)
    except (errors.Unavailable, errors.Unauthorized):
        raise
    except errors.ApiaryError as exc:
        return ["Events:", f"  <unavailable: {exc.message}>"]
    items = tables.merge_events(list(listed.get("items") or []))
    if not items:
        return ["Events:       <none>"]
    header = ["TYPE", "REASON", "AGE", "COUNT", "FROM", "MESSAGE"]
    rows = [
        [
            tables.text(e.get("type")),
            tables.text(e.get("reason")),
            tables.age(e.get("lastTimestamp") or e.get("firstTimestamp"), now),
            tables.text(e.get("count")),
            tables.text(tables.dig(e, "source", "component")),
            tables.text(e.get("message")),
        ]
        for e in items
    ]
    return ["Events:"] + ["  " + line for line in tables.render(rows, header)]


def describe_command(
    kind: Annotated[str, typer.Argument(help="Kind (or KIND/NAME).", autocompletion=complete_kind)],
    name: Annotated[
        str | None, typer.Argument(help="Object name.", autocompletion=complete_name)
    ] = None,
) -> None:
    """Show an object's metadata, spec, status, conditions and Events."""
    ctl = get_ctl()
    info, obj_name = split_ref(kind, name)
    if not obj_name:
        raise typer.BadParameter("describe needs a NAME", param_hint="NAME")
    obj = ctl.client().get(info, obj_name, ctl.cell)
    now = datetime.now(UTC)
    extra = tier_of(ctl, obj) + llm_of(ctl, obj)
    for line in summary(obj, now) + extra + events_for(ctl, info, obj_name, now):
        output.out(line)


def tier_of(ctl: Ctl, obj: Obj) -> list[str]:
    """What an AgentSpec's ``taskTier`` resolves to (the Cell's tiers over the server's over the
    built-in map), read from one of its drones' ``spec.resolvedTier`` — what the node's gateway
    and the scheduler apply. ``<no drones yet>`` when none runs."""
    tier = tables.dig(obj, "spec", "taskTier", default=None)
    if obj.get("kind") != "AgentSpec" or not tier:
        return []
    selector = {AGENTSPEC_LABEL: str(obj["metadata"]["name"])}
    try:
        drones = ctl.client().list("drones", ctl.cell, selector=selector, limit=1)
    except errors.ApiaryError as exc:
        return [f"{'Tier:':<14}{tier} <unavailable: {exc.message}>"]
    items = drones.get("items") or []
    resolved = tables.dig(items[0], "spec", "resolvedTier", default=None) if items else None
    if not isinstance(resolved, dict):
        return [f"{'Tier:':<14}{tier} <no drones yet>"]
    parts = [f"{k} {resolved[k]}" for k in ("model", "maxTokens", "priority") if k in resolved]
    return [f"{'Tier:':<14}{tier} → " + (", ".join(parts) or "no model, no cap")]


def llm_of(ctl: Ctl, obj: Obj) -> list[str]:
    """The ``spec.llm`` an AgentSpec's drones use — its own over its Cell's default — and where
    each part came from: ``LLM: provider openai (secret openai-key) from cell team-a, model
    gpt-4o-mini from the agentspec``."""
    if obj.get("kind") != "AgentSpec":
        return []
    own = tables.dig(obj, "spec", "llm", default=None)
    cell_name = str((obj.get("metadata") or {}).get("namespace") or ctl.cell)
    try:
        cell_info, _ = split_ref("cell", cell_name)
        cell_llm = tables.dig(ctl.client().get(cell_info, cell_name), "spec", "llm", default=None)
    except errors.ApiaryError as exc:
        cell_llm = None
        if not own:
            return [f"{'LLM:':<14}<cell {cell_name} unavailable: {exc.message}>"]
    llm, sources = merged_llm(own, cell_llm)
    if llm is None:
        return [f"{'LLM:':<14}<none> (no spec.llm here or in cell {cell_name})"]

    def origin(field: str) -> str:
        return f"cell {cell_name}" if sources.get(field) == "cell" else "the agentspec"

    provider = llm.get("provider") if isinstance(llm.get("provider"), dict) else None
    parts = []
    if provider is None:
        parts.append("no provider (set spec.llm.provider here or in the cell)")
    else:
        secret = tables.dig(provider, "secretRef", "name", default="?")
        parts.append(f"provider {provider.get('api') or 'openai'} (secret {secret}) from "
                     f"{origin('provider')}")  # fmt: skip
    if llm.get("model"):
        parts.append(f"model {llm['model']} from {origin('model')}")
    return [f"{'LLM:':<14}" + ", ".join(parts)]


def register(app: typer.Typer) -> None:
    app.command("describe")(describe_command)
