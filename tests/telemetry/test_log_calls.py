"""Log lines say what happened in a constant message and carry their details as keys
(docs/observability.md, "Logs"): an AST scan of src/apiary for logger calls that format their
message — an f-string, ``%``/``+``/``.format`` on it, or ``%s`` arguments after it — and for
``extra=`` keys the stdlib's LogRecord would refuse (``name``, ``message``, …)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "apiary"

LEVELS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "log"}

RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _is_logger(node: ast.expr) -> bool:
    """``log``, ``self._log``, ``logger``, ``logging``, ``get_logger(…)``, ``getLogger(…)``."""
    if isinstance(node, ast.Name | ast.Attribute):
        name = (node.id if isinstance(node, ast.Name) else node.attr).lower().lstrip("_")
        return name in {"log", "logger", "logging"} or name.endswith(("_log", "_logger"))
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name in {"getLogger", "get_logger"}
    return False


def _is_announce(node: ast.expr) -> bool:
    """``get_logger(ANNOUNCE)``: its sentences (``apiaryd listening on …``, ``apiaryd node …
    joined …``) are what scripts and tests wait for, so they keep their words (and the keys)."""
    return (
        isinstance(node, ast.Call)
        and bool(node.args)
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "ANNOUNCE"
    )


def _formatted(message: ast.expr) -> str | None:
    if isinstance(message, ast.JoinedStr):
        return "an f-string message"
    if isinstance(message, ast.BinOp) and isinstance(message.op, ast.Mod | ast.Add):
        return "a message built with % or +"
    if (
        isinstance(message, ast.Call)
        and isinstance(message.func, ast.Attribute)
        and message.func.attr == "format"
    ):
        return "a message built with .format()"
    return None


def offences(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LEVELS
            and _is_logger(node.func.value)
        ):
            continue
        args = node.args[1:] if node.func.attr == "log" else node.args
        if args and not _is_announce(node.func.value):
            why = _formatted(args[0]) or ("%-style arguments" if len(args) > 1 else None)
            if why:
                found.append((node.lineno, why))
        for kw in node.keywords:
            if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                for key in kw.value.keys:
                    if isinstance(key, ast.Constant) and key.value in RESERVED:
                        found.append((node.lineno, f"extra key {key.value!r} is a LogRecord's"))
    return found


def test_no_log_call_in_src_formats_its_message() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for line, why in offences(ast.parse(path.read_text(), str(path))):
            bad.append(f"src/apiary/{rel}:{line}: {why}")
    assert not bad, "log fields are keys, not words in the message:\n" + "\n".join(bad)


def test_the_scan_finds_what_it_must() -> None:
    code = """
log.info("a %s", x)
log.warning(f"b {x}")
self._log.error("c %s" % x)
logging.getLogger("z").info("d {}".format(x))
log.log(10, "e %s", x)
log.info("f", extra={"name": x})
log.info("fine", extra={"cell": c})
get_logger(ANNOUNCE).info(f"apiaryd listening on {url}", url=url)
catalog.info("not a logger: %s", x)
"""
    assert [line for line, _ in offences(ast.parse(code))] == [2, 3, 4, 5, 6, 7]
