"""Request bodies: size-limited reading and JSON/YAML parsing into plain JSON-safe dicts.

Everything a client can send is turned into a clear 4xx here — malformed syntax, a document that is
not a mapping, YAML that JSON cannot represent (non-string keys, huge integers), YAML whose aliases
would expand it past :mod:`apiary.resources.yaml_bounds` — so nothing downstream ever sees a value
it cannot store or serialise. :func:`parse_body_async` parses a large body, or a YAML one that uses
aliases, on a worker thread, so ``/healthz``, heartbeats and everyone else's requests keep being
answered while a big apply is parsed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import orjson
import yaml
from starlette.requests import Request

from apiary.errors import ApiaryError, BadRequest, PayloadTooLarge
from apiary.resources.yaml_bounds import DEFAULT_BOUNDS, YamlBounds, YamlBoundsError, load_all

_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
_JSON_TYPES = ("application/json", "", "text/json", "application/merge-patch+json")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1

OFF_LOOP_BYTES = 64 << 10
"""Bodies larger than this are parsed on a worker thread (orjson does ~1 MiB in a few ms; PyYAML
is ~50x slower), as is any YAML body that may hold aliases."""


class UnsupportedMediaType(ApiaryError):
    status = 415
    code = "UnsupportedMediaType"


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes without buffering them all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("Content-Length header is not a number") from None
        if size > limit:
            raise PayloadTooLarge(
                f"request body of {size} bytes is over the limit of {limit} bytes"
            )
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


async def parse_body_async(
    raw: bytes, content_type: str | None, bounds: YamlBounds = DEFAULT_BOUNDS
) -> dict[str, Any]:
    """:func:`parse_body`, on a worker thread when the body is large or YAML with aliases."""
    yaml_aliases = _media(content_type) in _YAML_TYPES and b"*" in raw
    if len(raw) > OFF_LOOP_BYTES or yaml_aliases:
        return await asyncio.to_thread(parse_body, raw, content_type, bounds)
    return parse_body(raw, content_type, bounds)


def parse_body(
    raw: bytes, content_type: str | None, bounds: YamlBounds = DEFAULT_BOUNDS
) -> dict[str, Any]:
    """Decode a JSON or YAML document that must be a mapping (an object)."""
    media = _media(content_type)
    if not raw.strip():
        raise BadRequest("request body is empty: send the object as JSON or YAML")
    if media in _YAML_TYPES:
        doc = _parse_yaml(raw, bounds)
        what = "YAML"
    elif media in _JSON_TYPES or media.endswith("+json"):
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"malformed JSON body: {exc}") from None
        what = "JSON"
    else:
        raise UnsupportedMediaType(
            f"unsupported Content-Type {media!r}: use application/json or application/yaml"
        )
    if not isinstance(doc, dict):
        raise BadRequest(f"the {what} body must be an object (a mapping), not {_type_name(doc)}")
    return doc


def _parse_yaml(raw: bytes, bounds: YamlBounds) -> Any:
    try:
        docs = [d for d in load_all(raw, bounds) if d is not None]
    except YamlBoundsError as exc:
        raise BadRequest(f"YAML body refused: {_one_line(str(exc))}") from None
    except yaml.YAMLError as exc:
        raise BadRequest(f"malformed YAML body: {_one_line(str(exc))}") from None
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"malformed YAML body: {_one_line(str(exc))}") from None
    if len(docs) != 1:
        raise BadRequest(f"the YAML body must hold exactly one document (found {len(docs)})")
    try:
        return _json_safe(docs[0], "")
    except RecursionError:
        raise BadRequest("the YAML body is nested too deeply") from None


def _json_safe(value: Any, path: str) -> Any:
    """YAML → the JSON data model: string keys, 64-bit integers, timestamps as strings."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                where = path or "the document"
                raise BadRequest(f"{where}: key {k!r} must be a string (quote it in YAML)")
            out[k] = _json_safe(v, f"{path}.{k}" if path else k)
        return out
    if isinstance(value, list):
        return [_json_safe(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise BadRequest(f"{path or 'value'}: integer {value} is out of range")
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise BadRequest(f"{path or 'value'}: {value} is not a JSON number")
        return value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        raise BadRequest(f"{path or 'value'}: binary YAML values are not supported")
    raise BadRequest(f"{path or 'value'}: unsupported YAML value of type {_type_name(value)}")


def _type_name(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
