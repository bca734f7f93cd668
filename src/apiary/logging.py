"""Structured logs: structlog for Apiary, with the standard library (uvicorn) routed through it.

``configure_logging(json=True)`` gives one JSON object per line on stderr, what log shippers want;
``json=False`` gives readable console lines for a developer's terminal.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure_logging(json: bool = True, level: str | int = "info") -> None:
    """Configure structlog and stdlib logging once for the process (idempotent)."""
    lvl = level if isinstance(level, int) else logging.getLevelNamesMapping().get(level.upper())
    if lvl is None:
        raise ValueError(f"unknown log level {level!r} (debug, info, warning, error)")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(lvl)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # The local node agent's HTTP calls would log every request at info: keep them out.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(lvl, logging.WARNING))


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name`` (works before ``configure_logging`` too)."""
    return structlog.get_logger(name)
