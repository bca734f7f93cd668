"""``apiaryctl scale``: set the replicas of a hive stage or an agentspec.

It prints the count the server set, not the one asked for: on an autoscaled stage the two differ
when the request was outside ``minReplicas..maxReplicas``, and the line says so."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from apiary.ctl import output
from apiary.ctl.context import get_ctl, ref, split_ref


def scale_command(
    target: Annotated[str, typer.Argument(help="hive/NAME or agentspec/NAME.")],
    replicas: Annotated[int, typer.Option("--replicas", min=0, help="Drones wanted.")],
    name: Annotated[str | None, typer.Argument(help="Name, when KIND is given apart.")] = None,
    stage: Annotated[
        str | None,
        typer.Option("--stage", help="Hive stage (needed when the hive has several)."),
    ] = None,
) -> None:
    """Scale a hive stage or an agentspec; the controllers start or stop drones to match."""
    ctl = get_ctl()
    info, obj_name = split_ref(target, name)
    if not obj_name:
        raise typer.BadParameter("scale needs hive/NAME or agentspec/NAME", param_hint="TARGET")
    if info.kind not in ("Hive", "AgentSpec"):
        raise typer.BadParameter(
            f"only hives and agentspecs can be scaled, not {info.plural}", param_hint="TARGET"
        )
    if stage is not None and info.kind != "Hive":
        raise typer.BadParameter("--stage is for hives only", param_hint="'--stage'")
    result: dict[str, Any] = ctl.client().scale(info, obj_name, replicas, ctl.cell, stage=stage)
    if ctl.output in ("yaml", "json"):
        doc = output.dump_yaml(result).rstrip("\n") if ctl.output == "yaml" else None
        output.out(doc if doc is not None else output.dump_json(result))
        return
    output.out(scaled_line(ref(info, obj_name), result, replicas))


def scaled_line(what: str, scale: dict[str, Any], asked: int) -> str:
    """``hive/h scaled (stage s) to N``: N as the server set it — an autoscaled stage is clamped
    to its bounds, and the server's ``message`` then says so."""
    spec = scale.get("spec") or {}
    picked, got, note = spec.get("stage"), spec.get("replicas", asked), scale.get("message")
    line = f"{what} scaled" + (f" (stage {picked})" if picked else "") + f" to {got}"
    return line + (f" ({note})" if note else "")


def register(app: typer.Typer) -> None:
    app.command("scale")(scale_command)
