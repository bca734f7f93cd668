"""The settings one ``apiaryctl`` invocation runs with, and its lazily opened API client.

Precedence for server, cell and token: command-line flag, then environment variable, then the
config file, then the built-in default (and, for the token, a local server's admin.token).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import typer
from typer._click.globals import get_current_context

from apiary import client as api
from apiary.ctl import jsonpath, output
from apiary.resources import KindInfo, lookup_kind

OUTPUT_FORMATS = ("table", "wide", "yaml", "json", "name", "jsonpath=TEMPLATE")


@dataclass
class Ctl:
    server: str
    cell: str
    token: str | None
    output: str
    template: str | None = None
    """The JSONPath template of ``-o jsonpath=TEMPLATE`` (``output`` is then ``jsonpath``)."""
    _client: api.ApiClient | None = field(default=None, repr=False)

    @classmethod
    def from_options(
        cls, server: str | None, cell: str | None, token: str | None, out_format: str | None
    ) -> Ctl:
        config = api.load_config()
        fmt, template = parse_output(out_format)
        return cls(
            server=api.normalize_server(server or config.get("server")),
            cell=cell or config.get("cell") or api.DEFAULT_CELL,
            token=token or config.get("token") or None,
            output=fmt,
            template=template,
        )

    def client(self) -> api.ApiClient:
        """One client per invocation; warnings from any call go to stderr as they arrive."""
        if self._client is None:
            self._client = api.ApiClient(self.server, self.token, self.cell, on_warning=output.warn)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def parse_output(out_format: str | None) -> tuple[str, str | None]:
    """``-o``: one of the formats, or ``jsonpath=TEMPLATE`` (checked here: a usage error)."""
    given = out_format or "table"
    kind, sep, template = given.partition("=")
    if kind.lower() == "jsonpath" and sep:
        try:
            jsonpath.parse(template)
        except jsonpath.JsonPathError as exc:
            raise typer.BadParameter(f"jsonpath: {exc}", param_hint="'-o'") from None
        return "jsonpath", template
    fmt = given.lower()
    if fmt not in OUTPUT_FORMATS[:-1]:
        raise typer.BadParameter(
            f"{out_format!r} is not one of {', '.join(OUTPUT_FORMATS)}", param_hint="'-o'"
        )
    return fmt, None


def get_ctl() -> Ctl:
    ctx = get_current_context()
    obj = ctx.find_object(Ctl)
    if obj is None:  # a command invoked without the group callback (never via the CLI)
        obj = Ctl.from_options(None, None, None, None)
        ctx.obj = obj
        ctx.call_on_close(obj.close)
    return obj


def kind_arg(name: str) -> KindInfo:
    """A kind named any way (``hive``, ``hives``, ``hv``); unknown → usage error (exit 2)."""
    info = lookup_kind(name)
    if info is None:
        from apiary.resources import KINDS

        known = ", ".join(k.plural for k in KINDS)
        raise typer.BadParameter(f"unknown kind {name!r} (known: {known})", param_hint="KIND")
    return info


def split_ref(ref: str, name: str | None) -> tuple[KindInfo, str | None]:
    """``hive/x`` or ``hive x`` → (kind, name)."""
    if "/" in ref:
        kind, _, obj_name = ref.partition("/")
        if name is not None:
            raise typer.BadParameter(
                f"give either KIND/NAME or KIND NAME, not {ref!r} and {name!r}"
            )
        return kind_arg(kind), obj_name or None
    return kind_arg(ref), name


def ref(obj: dict[str, object] | KindInfo, name: str | None = None) -> str:
    """``hive/pipeline-hive`` for messages and ``-o name``."""
    if isinstance(obj, KindInfo):
        return f"{obj.singular}/{name}"
    kind = str(obj.get("kind", "object"))
    info = lookup_kind(kind)
    meta = obj.get("metadata")
    obj_name = meta.get("name", "?") if isinstance(meta, dict) else "?"
    return f"{info.singular if info else kind.lower()}/{obj_name}"
