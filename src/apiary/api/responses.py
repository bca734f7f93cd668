"""Fast JSON responses: orjson straight to bytes, no pydantic models on the hot path."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from starlette.responses import Response

from apiary.errors import ApiaryError


class JSON(Response):
    """A JSON response rendered by orjson (datetimes and non-str keys are handled)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def json_response(content: Any, status: int = 200, warnings: Iterable[str] = ()) -> JSON:
    response = JSON(content, status_code=status)
    for warning in warnings:
        response.headers.append("Warning", warning_header(warning))
    return response


def warning_header(text: str) -> str:
    """Kubernetes-style ``299 - "text"`` with quotes and backslashes escaped, ASCII only."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.encode("ascii", "backslashreplace").decode("ascii")
    escaped = "".join(ch if ch.isprintable() else " " for ch in escaped)
    return f'299 - "{escaped}"'


def error_body(
    status: int, reason: str, message: str, details: Sequence[Mapping[str, str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"code": status, "reason": reason, "message": message}
    if details:
        body["details"] = list(details)
    return body


def error_response(exc: ApiaryError, headers: Mapping[str, str] | None = None) -> JSON:
    return JSON(exc.as_dict(), status_code=exc.status, headers=dict(headers or {}))
