"""``apiaryctl scale``: set the replicas of a hive stage or an agentspec."""

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
    what = ref(info, obj_name)
    picked = (result.get("spec") or {}).get("stage")
    output.out(f"{what} scaled" + (f" (stage {picked})" if picked else "") + f" to {replicas}")


def register(app: typer.Typer) -> None:
    app.command("scale")(scale_command)
