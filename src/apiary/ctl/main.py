"""The ``apiaryctl`` entry point: global options, error handling and exit codes.

Global options (``-s``, ``-n``, ``--token``, ``-o``) may be written anywhere on the command line
(``apiaryctl get hives -o yaml`` as well as ``apiaryctl -o yaml get hives``): :class:`CtlGroup`
moves them in front of the subcommand before parsing. Every :class:`~apiary.errors.ApiaryError`
becomes one ``error:`` line on stderr and an exit code — never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
import yaml
from typer._click.core import Context as ClickContext
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from apiary import errors
from apiary.ctl import examples, output
from apiary.ctl.commands import apiresources as api_resources_command
from apiary.ctl.commands import approve as approve_commands
from apiary.ctl.commands import budget as budget_commands
from apiary.ctl.commands import comb as comb_commands
from apiary.ctl.commands import completion as completion_command
from apiary.ctl.commands import dlq as dlq_commands
from apiary.ctl.commands import explain as explain_command
from apiary.ctl.commands import logs as logs_command
from apiary.ctl.commands import patch as patch_command
from apiary.ctl.commands import register_all
from apiary.ctl.commands import run as run_command
from apiary.ctl.commands import scale as scale_command
from apiary.ctl.commands import session as session_command
from apiary.ctl.commands import token as token_commands
from apiary.ctl.commands import top as top_command
from apiary.ctl.context import Ctl

#: global options that take a value, by every spelling
_VALUE_OPTS = {
    "-s", "--server", "-n", "--cell", "--namespace", "--token", "-o", "--output", "--context",
}  # fmt: skip


def hoist_globals(args: list[str]) -> list[str]:
    """Move global options (and their values) to the front so the group parses them."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--" or (a == "set-context" and rest[-1:] == ["config"]):
            rest.extend(args[i:])  # set-context's own --server/--cell/--token are its values
            break
        opt = a.split("=", 1)[0]
        if opt in _VALUE_OPTS and opt.startswith("--") and "=" in a:
            front.append(a)
        elif a in _VALUE_OPTS and i + 1 < len(args):
            front.extend(args[i : i + 2])
            i += 1
        elif a[:2] in ("-s", "-n", "-o") and len(a) > 2 and not a.startswith("--"):
            front.extend([a[:2], a[3:] if a[2] == "=" else a[2:]])  # -ojson, -o=json
        else:
            rest.append(a)
        i += 1
    return front + rest


class CtlGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        examples.finish(self)  # Examples: in every command's help; markup-safe help texts

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Usage errors as one ``error:`` line too (not a box), exit 2; the rest as click."""
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:
            exc.show()
            rv = output.EXIT_USAGE
        except UsageError as exc:
            output.error(exc.format_message())
            path = exc.ctx.command_path if exc.ctx is not None else "apiaryctl"
            output.info(f"  see: {path} --help")
            rv = output.EXIT_USAGE
        except ClickException as exc:
            output.error(exc.format_message())
            rv = exc.exit_code
        except typer.Abort:
            rv = output.EXIT_FAILED
        code = rv if isinstance(rv, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_globals(args))

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except errors.ApiaryError as exc:
            output.error(exc.message, exc.details)
            raise typer.Exit(output.exit_code_for(exc)) from None
        except yaml.YAMLError as exc:
            output.error(f"invalid YAML: {exc}")
            raise typer.Exit(output.EXIT_FAILED) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise typer.Exit(output.EXIT_OK) from None
            output.error(str(exc))
            raise typer.Exit(output.EXIT_FAILED) from None
        except (typer.Exit, ClickException, typer.Abort):
            raise
        except Exception as exc:
            if os.environ.get("APIARY_DEBUG"):
                raise
            output.error(f"unexpected {type(exc).__name__}: {exc} (set APIARY_DEBUG=1 for details)")
            raise typer.Exit(output.EXIT_FAILED) from None


app = typer.Typer(
    cls=CtlGroup,
    name="apiaryctl",
    help="Control Apiary: apply manifests, inspect hives, agents and drones.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _globals(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            "-s",
            "--server",
            envvar="APIARY_SERVER",
            show_default="http://127.0.0.1:8080",
            help="apiaryd URL.",
        ),
    ] = None,
    cell: Annotated[
        str | None,
        typer.Option(
            "-n",
            "--cell",
            "--namespace",
            envvar="APIARY_CELL",
            show_default="default",
            help="Cell (namespace) to work in.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="APIARY_TOKEN", help="Bearer token.", show_default=False),
    ] = None,
    out_format: Annotated[
        str | None,
        typer.Option(
            "-o",
            "--output",
            show_default="table",
            help="table|wide|yaml|json|name|jsonpath=TEMPLATE (get; see docs/cli.md).",
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            envvar="APIARY_CONTEXT",
            show_default=False,
            help="Config file context to use (default: its current-context).",
        ),
    ] = None,
) -> None:
    """Global options; see docs/cli.md for the config file and exit codes."""
    if context:
        os.environ["APIARY_CONTEXT"] = context  # every read of the config file sees it
    try:
        settings = Ctl.from_options(server, cell, token, out_format)
    except errors.ApiaryError as exc:  # unreadable config file, unknown context
        if ctx.invoked_subcommand != "config":
            output.error(exc.message, exc.details)
            raise typer.Exit(output.EXIT_USAGE) from None
        settings = Ctl("", "", None, "table")  # config … must still be able to repair it
    ctx.obj = settings
    ctx.call_on_close(settings.close)


register_all(app)
comb_commands.register(app)  # comb …, memory …
logs_command.register(app)
scale_command.register(app)
patch_command.register(app)  # patch KIND NAME -p … [--type merge|json]
dlq_commands.register(app)  # dlq list|show|replay|purge
approve_commands.register(app)  # approve, reject
budget_commands.register(app)  # budget raise|show
run_command.register(app)
session_command.register(app)
top_command.register(app)  # top drones|hives
token_commands.register(app)  # token create|list|revoke
completion_command.register(app)  # completion bash|zsh|fish
explain_command.register(app)  # explain KIND[.field]
api_resources_command.register(app)  # api-resources


def main() -> None:
    """Console-script entry point (``apiaryctl``)."""
    completion_command.init()  # _APIARYCTL_COMPLETE=complete_bash … answers the shell
    app(prog_name="apiaryctl")


if __name__ == "__main__":  # pragma: no cover
    main()
