"""Structured logs: structlog for Apiary, with the standard library (uvicorn) routed through it.

Every line apiaryd and ``apiaryd node`` write to stderr goes through here: one JSON object per
line when stderr is not a terminal (what log shippers and ``apiaryd 2>&1 | jq`` want), readable
console lines on a terminal; ``--log-format json|console`` (``APIARY_LOG_FORMAT``) overrides.

Fields are keys, not words in a sentence: ``log.info("session started", cell=c, hive=h)``, and
stdlib records get theirs from ``extra={"cell": c}``. Two ways to add fields to every line:

* :func:`bind_fields` (structlog contextvars): for everything logged in the current task;
  :func:`set_fields`/:func:`reset_fields` do the same with one ``ContextVar`` set — cheap enough
  for the message path (the router sets ``cell``/``hive``/``session``/``stage`` per message);
* :func:`add_field_source`: a function called for each line returning fields to add, e.g. the
  current span's ``trace_id``/``span_id`` (``add_field_source(current_trace_fields)``).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TextIO

import structlog

FORMATS = ("json", "console")

ANNOUNCE = "apiary.announce"
"""The logger of lines written whatever ``--log-level`` says: ``apiaryd listening on …`` and
``apiaryd node … joined …``, which scripts and tests wait for."""

FieldSource = Callable[[], Mapping[str, Any] | None]
_SOURCES: list[FieldSource] = []

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message",
}  # fmt: skip
"""LogRecord attributes that are not ``extra=`` fields (uvicorn's ``color_message`` is the
message again, with terminal colours)."""


def default_format(stream: TextIO | None = None) -> str:
    """``console`` when ``stream`` (stderr) is a terminal, else ``json``."""
    s = sys.stderr if stream is None else stream
    try:
        return "console" if s.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def add_field_source(source: FieldSource) -> None:
    """Add ``source()``'s fields to every line from now on (existing keys win)."""
    if source not in _SOURCES:
        _SOURCES.append(source)


def bind_fields(**fields: Any) -> None:
    """Add ``fields`` to every line logged in the current context (task)."""
    structlog.contextvars.bind_contextvars(**fields)


_CONTEXT: ContextVar[Mapping[str, Any] | None] = ContextVar("apiary_log_fields", default=None)


def set_fields(fields: Mapping[str, Any]) -> Token[Mapping[str, Any] | None]:
    """Add ``fields`` (over the context's current ones) to every line logged in this context
    until :func:`reset_fields` with the returned token."""
    current = _CONTEXT.get()
    return _CONTEXT.set({**current, **fields} if current else fields)


def reset_fields(token: Token[Mapping[str, Any] | None]) -> None:
    _CONTEXT.reset(token)


def _from_context(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    fields = _CONTEXT.get()
    if fields:
        for key, value in fields.items():
            event.setdefault(key, value)
    return event


def _from_sources(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for source in _SOURCES:
        try:
            extra = source()
        except Exception:  # a broken source must not lose the line
            continue
        for key, value in (extra or {}).items():
            event.setdefault(key, value)
    return event


def _record_extras(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A stdlib record's ``extra=`` attributes as keys."""
    record = event.get("_record")
    if isinstance(record, logging.LogRecord):
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                event.setdefault(key, value)
    return event


def configure_logging(
    json: bool | None = None, level: str | int = "info", *, stream: TextIO | None = None
) -> None:
    """Configure structlog and stdlib logging for the process (idempotent). ``json`` None: by
    whether ``stream`` (default stderr) is a terminal."""
    lvl = level if isinstance(level, int) else logging.getLevelNamesMapping().get(level.upper())
    if lvl is None:
        raise ValueError(f"unknown log level {level!r} (debug, info, warning, error)")
    out = sys.stderr if stream is None else stream
    as_json = default_format(out) == "json" if json is None else json
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _from_context,
        _from_sources,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(default=str)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, _record_extras],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(lvl)
    logging.getLogger(ANNOUNCE).setLevel(logging.INFO)
    # What Python itself would print on stderr goes through the same handler: warnings, and a
    # traceback nothing caught (the process's or a thread's), as one line each.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # The local node agent's HTTP calls would log every request at info: keep them out.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(lvl, logging.WARNING))


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("apiary").critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    logging.getLogger("apiary").critical(
        "uncaught exception in a thread",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        extra={"in_thread": args.thread.name if args.thread is not None else None},
    )


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name`` (works before ``configure_logging`` too)."""
    return structlog.get_logger(name)
