"""The parameters of every route, for :mod:`apiary.api.openapi`: query parameters described as
strictly as the server parses them (so what the document calls invalid, the server refuses), and
the headers and extra success statuses FastAPI cannot see in handlers that read the request
themselves. Keyed by ``"METHOD /path"`` as the document lists it (``{plural}`` expanded).
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
NDJSON = "application/x-ndjson"

_FLAG_RE = (
    r"^\s*([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|[Aa][Ll][Ll]|1|0)?\s*$"
)
FLAG = {"type": "string", "pattern": _FLAG_RE, "examples": ["false"]}
"""A boolean as the server reads it (``true|false|1|0|yes|no|all``, any case)."""
COUNT = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}

# ----------------------------------------------------------------------- query parameters


def _q(name: str, schema: Obj, text: str, required: bool = False) -> Obj:
    """A query parameter; sent empty (``?limit=``) it means unset, as in Kubernetes."""
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": text, "allowEmptyValue": not required}  # fmt: skip


LIST_PARAMS = [
    _q("labelSelector", {"type": "string"}, "Only objects whose labels match (a=b,c!=d,e in (f))."),
    _q("fieldSelector", {"type": "string"}, "Only metadata.name=NAME is supported."),
    _q("limit", COUNT, "At most this many items; the rest with metadata.continue."),
    _q("continue", {"type": "string"}, "The token of the previous page."),
    _q("watch", FLAG, f"Stream changes as {NDJSON} lines {{type, object}}."),
    _q("resourceVersion", COUNT, "Watch from this version (410 Gone when compacted)."),
]
EVENT_PARAMS = [
    _q("involvedObject.kind", {"type": "string"}, "Events about objects of this kind."),
    _q("involvedObject.name", {"type": "string"}, "Events about the object of this name."),
]
DRY_RUN = _q("dryRun", FLAG, "Validate and answer what would be stored; store nothing (All).")
STRICT = _q("strict", FLAG, "Unknown fields are errors, not warnings.")
REVEAL = _q("reveal", FLAG, "Secrets only: show the values (needs the reveal verb).")
DELETE_RV = _q("resourceVersion", {"type": "string"}, "Delete only this version (else 409).")
STAGE = _q("stage", {"type": "string"}, "The hive stage (needed when it has several).")
LOGS = [
    _q("tail", COUNT, "Only the last N lines."),
    _q("since", {"type": "string"}, "Only lines newer than this (5m, 1h30m, RFC 3339)."),
    _q("timestamps", FLAG, "Prefix each line with its time."),
    _q("follow", FLAG, "Keep streaming new lines."),
]
AFTER = _q("after", COUNT, "Entries after this sequence number.")
PAGE = [_q("limit", COUNT, "At most this many."), _q("continue", {"type": "string"}, "Next page.")]

QUERY: dict[str, list[Obj]] = {
    "GET /api/v1/audit": [_q("limit", COUNT, "At most this many records (max 10000).")],
    "GET /api/v1/cells/{cell}/drones/{name}/logs": LOGS,
    "GET /api/v1/cells/{cell}/hives/{name}/logs": LOGS,
    "GET /api/v1/cells/{cell}/hives/{name}/scale": [STAGE],
    "PUT /api/v1/cells/{cell}/hives/{name}/scale": [STAGE, DRY_RUN],
    "PUT /api/v1/cells/{cell}/agentspecs/{name}/scale": [DRY_RUN],
    "POST /api/v1/cells/{cell}/sessions": [DRY_RUN],
    "DELETE /api/v1/cells/{cell}/sessions/{name}": [DRY_RUN],
    "GET /api/v1/cells/{cell}/sessions/{name}/messages": [
        AFTER,
        _q("limit", {"type": "integer", "minimum": 1, "maximum": 10_000}, "At most this many."),
        _q("wait", {"type": "string"}, "Long-poll: wait up to this many seconds (max 60)."),
    ],
    "GET /api/v1/cells/{cell}/sessions/{name}/stream": [AFTER],
    "GET /api/v1/cells/{cell}/hives/{hive}/dlq": [
        _q("phase", {"type": "string"}, "Comma-separated: Pending, Replayed, Resolved, Failed."),
        *PAGE,
    ],
    "GET /api/v1/cells/{cell}/sessions/{session}/comb": [
        _q("pattern", {"type": "string"}, "Glob over the keys (default *).")
    ],
    "GET /api/v1/cells/{cell}/sessions/{session}/lists/{name}": [
        _q("start", {"type": "integer"}, "First index (default 0)."),
        _q("stop", {"type": "integer"}, "Last index, inclusive (default -1: the end)."),
    ],
    "GET /api/v1/cells/{cell}/memory/search": [
        _q("q", {"type": "string"}, "What to search for.", required=True),
        _q("limit", {"type": "integer"}, "At most this many hits (default 10)."),
    ],
    "GET /api/v1/tokens": LIST_PARAMS[:4],
}

HEADERS: dict[str, list[Obj]] = {
    "POST /api/v1/cells/{cell}/jobs": [
        {"name": "Idempotency-Key", "in": "header", "required": False,
         "schema": {"type": "string", "maxLength": 256},
         "description": "Retries with the same key meet the same job (200, Idempotent-Replayed)."},
    ],
    "GET /api/v1/cells/{cell}/sessions/{name}/stream": [
        {"name": "Last-Event-ID", "in": "header", "required": False,
         "schema": {"type": "string"}, "description": "Resume after this entry (wins over after)."},
    ],
}  # fmt: skip
ALSO_OK: dict[str, str] = {"POST /api/v1/cells/{cell}/jobs": "200"}
"""Routes with a second success status: a retried job answers 200 with the job it meets."""
