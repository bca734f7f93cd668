"""What the journal stores — entries and the session state — and the checks every backend shares.

Input is checked once, here, before a backend sees it, so every backend refuses the same things
with the same message naming the field (``entries[1].kind``), and a backend's writer never meets
a value it cannot serialize: a failure inside a group-commit batch would fail every caller in it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from apiary.errors import BadRequest, FieldDetail, Invalid

KINDS = frozenset({"input", "dispatch", "output", "final", "error", "event"})
"""Every kind of entry; see docs/sessions.md "Journal entries"."""

ANSWER_KINDS = frozenset({"output", "error"})
"""Kinds that close the dispatch named by their ``parent``."""

MAX_SESSION_LENGTH = 512
MAX_ID_LENGTH = 256
MAX_READ_LIMIT = 10_000
MAX_MODELS = 64
"""Most models one entry names (an Outcome carries at most this many; see waggle.envelope)."""

ModelUsage = tuple[tuple[str, int, int], ...]
"""(model, prompt tokens, completion tokens) per model that answered a hop's LLM calls."""


@dataclass
class Entry:
    """One journal entry: a message in a session's transcript (see docs/sessions.md)."""

    session: str  # "<cell>/<session name>"
    id: str  # unique within the session: the idempotency key
    kind: str  # input | dispatch | output | final | error | event
    message: dict[str, Any]  # the Waggle message as a dict (opaque JSON to the journal)
    stage: str | None = None
    parent: str | None = None
    drone: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seq: int = 0  # assigned by the journal on commit; increasing within a session
    created: float = 0.0  # epoch seconds, assigned on commit (injectable clock)
    models: ModelUsage = ()  # the hop's tokens by the model that answered (the gateway's count)
    cost_usd: float = 0.0  # their estimated cost, priced when the router recorded the hop


class Totals(NamedTuple):
    """A session's running sums, kept in its session row (one row read, never a scan)."""

    entries: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@dataclass
class SessionState:
    """The pattern engine's state document for one session and its optimistic-lock version."""

    version: int  # 0 when the session has no state yet
    state: dict[str, Any]


@dataclass
class PendingCommit:
    """A checked ``commit`` call, serialized and ready for a backend's writer.

    ``entries`` has duplicates within the call removed (the first of an id wins); ``messages``
    are their messages as JSON text and ``opens`` says which are dispatches not answered within
    this same call (written open), both index-aligned. A backend sets ``written`` to the rows it
    wrote once the commit succeeded: ``Journal.commit`` hands copies of them to the session's
    waiters instead of making each waiter read them back.
    """

    session: str
    expect_version: int
    state: str
    entries: list[Entry]
    messages: list[str]
    opens: list[bool]
    written: list[Row] | None = None


@dataclass
class Row:
    """One entry a writer inserts: its seq, JSON message and whether it is an open dispatch."""

    entry: Entry
    seq: int
    message: str
    pending: bool


@dataclass
class Plan:
    """What a commit writes once its version check passed and the existing ids are known.

    ``close`` are the dispatch ids (journaled by earlier commits) that this commit answers; a
    dispatch answered within the same commit is simply written closed. The seqs are copied onto
    the caller's entries (``apply``) only after the transaction committed, so a failed batch
    leaves them untouched.
    """

    rows: list[Row] = field(default_factory=list)
    close: list[str] = field(default_factory=list)
    last_seq: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def take(self, entry: Entry, message: str, open_: bool) -> None:
        """Append ``entry`` (new in the session) as the next seq."""
        self.last_seq += 1
        self.rows.append(Row(entry, self.last_seq, message, open_))
        self.prompt_tokens += entry.prompt_tokens
        self.completion_tokens += entry.completion_tokens
        self.cost_usd += entry.cost_usd

    def finish(self) -> None:
        """Work out ``close``: dispatches of earlier commits that the new entries answer."""
        answered = {
            r.entry.parent
            for r in self.rows
            if r.entry.kind in ANSWER_KINDS and r.entry.parent is not None
        }
        if answered:
            here = {r.entry.id for r in self.rows if r.entry.kind == "dispatch"}
            self.close = sorted(answered - here)

    def apply(self, created: float) -> None:
        for row in self.rows:
            row.entry.seq = row.seq
            row.entry.created = created


def written_entries(rows: Sequence[Row], after_seq: int, limit: int) -> list[Entry] | None:
    """What a read of ``seq > after_seq`` would return, built from a commit's rows — or None
    when the rows do not continue right after ``after_seq`` (the reader must read).

    Seqs are gap-free per session, so rows starting at ``after_seq + 1`` are exactly the next
    entries whoever else writes. Each is a private copy with its message decoded from the JSON
    that was stored, as a read would give it.
    """
    start = 0
    while start < len(rows) and rows[start].seq <= after_seq:
        start += 1
    if start == len(rows) or rows[start].seq != after_seq + 1:
        return None
    out: list[Entry] = []
    for r in rows[start : start + limit]:
        e = r.entry
        out.append(
            Entry(
                e.session,
                e.id,
                e.kind,
                load_json(r.message),
                e.stage,
                e.parent,
                e.drone,
                None if e.latency_ms is None else float(e.latency_ms),
                e.prompt_tokens,
                e.completion_tokens,
                r.seq,
                e.created,
                e.models,
                e.cost_usd,
            )
        )
    return out


def models_json(models: ModelUsage) -> str | None:
    """An entry's ``models`` as the durable backends store them: NULL when there are none (most
    entries — no LLM call), so a hop without LLM usage costs no encoding."""
    return orjson.dumps(models).decode() if models else None


def models_from_json(text: str | None) -> ModelUsage:
    """The inverse of :func:`models_json` (NULL — also every row older than the column — is
    no models)."""
    if not text:
        return ()
    return tuple((str(m), int(p), int(c)) for m, p, c in orjson.loads(text))


def plan_commit(pending: PendingCommit, existing: Collection[str], last_seq: int) -> Plan:
    """Number the entries whose id is new in the session (gap-free after ``last_seq``)."""
    plan = Plan(last_seq=last_seq)
    for entry, message, open_ in zip(pending.entries, pending.messages, pending.opens, strict=True):
        if entry.id not in existing:
            plan.take(entry, message, open_)
    plan.finish()
    return plan


def _invalid(path: str, message: str) -> Invalid:
    return Invalid(f"{path}: {message}", [FieldDetail(path, message)])


def check_session(session: object, path: str = "session") -> str:
    """A session key must be a non-empty string ("<cell>/<session name>")."""
    if not isinstance(session, str) or not session:
        raise _invalid(path, "must be a non-empty string such as 'cell/session'")
    if len(session) > MAX_SESSION_LENGTH or "\x00" in session or "\n" in session:
        raise _invalid(path, f"must be at most {MAX_SESSION_LENGTH} characters, no NUL/newline")
    return session


def check_id(value: object, path: str = "id") -> str:
    """An entry id: a non-empty string of at most MAX_ID_LENGTH characters."""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise _invalid(path, f"must be a non-empty string of at most {MAX_ID_LENGTH} characters")
    return value


def check_int(value: object, path: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _invalid(path, f"must be an integer ≥ {minimum}")
    return value


def check_seconds(value: object, path: str) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) < 0:  # type: ignore[arg-type]
        raise _invalid(path, "must be a finite number of seconds ≥ 0")
    return float(value)  # type: ignore[arg-type]


def check_limit(limit: object) -> int:
    value = check_int(limit, "limit", 1)
    if value > MAX_READ_LIMIT:
        raise _invalid("limit", f"must be at most {MAX_READ_LIMIT}")
    return value


def check_kinds(kinds: Collection[str] | None) -> tuple[str, ...] | None:
    """None means every kind; an unknown kind is an error rather than an empty answer."""
    if kinds is None:
        return None
    if isinstance(kinds, str):
        kinds = [kinds]
    out = tuple(sorted(set(kinds)))
    unknown = [k for k in out if k not in KINDS]
    if unknown:
        raise _invalid("kinds", f"unknown kind(s) {unknown}; known: {sorted(KINDS)}")
    return out


def _dumps(value: object, path: str) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError as exc:
        raise _invalid(path, f"must be JSON-serializable ({exc})") from exc


def _check_optional_str(value: object, path: str) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise _invalid(path, "must be a non-empty string or null")


def _optional_str_ok(value: object) -> bool:
    return value is None or (type(value) is str and value != "")


def _count_ok(value: object) -> bool:
    return type(value) is int and value >= 0


def _model_ok(m: object) -> bool:
    return (
        type(m) is tuple
        and len(m) == 3
        and type(m[0]) is str
        and m[0] != ""
        and _count_ok(m[1])
        and _count_ok(m[2])
    )


def _models_ok(models: object) -> bool:
    return type(models) is tuple and len(models) <= MAX_MODELS and all(map(_model_ok, models))


def _cost_ok(cost: object) -> bool:
    return type(cost) in (int, float) and 0 <= cost < math.inf  # type: ignore[operator]


def _looks_right(e: Entry, session: str) -> bool:
    """The common case in one expression (commit is on every message's path); ``_check_entry``
    then only runs its field-by-field checks to explain a failure."""
    latency = e.latency_ms
    return (
        e.session == session
        and e.kind in KINDS
        and type(e.id) is str
        and 0 < len(e.id) <= MAX_ID_LENGTH
        and type(e.message) is dict
        and _optional_str_ok(e.stage)
        and _optional_str_ok(e.parent)
        and _optional_str_ok(e.drone)
        and _count_ok(e.prompt_tokens)
        and _count_ok(e.completion_tokens)
        and (not e.models or _models_ok(e.models))
        and (e.cost_usd == 0 or _cost_ok(e.cost_usd))
        and (latency is None or (type(latency) in (int, float) and 0 <= latency < math.inf))
    )


def _check_entry(entry: object, session: str, path: str) -> Entry:
    if type(entry) is Entry and _looks_right(entry, session):
        return entry
    if not isinstance(entry, Entry):
        raise _invalid(path, f"must be an Entry, not {type(entry).__name__}")
    if entry.session != session:
        raise _invalid(f"{path}.session", f"is {entry.session!r}, the commit is for {session!r}")
    check_id(entry.id, f"{path}.id")
    if entry.kind not in KINDS:
        raise _invalid(f"{path}.kind", f"is {entry.kind!r}; one of {sorted(KINDS)}")
    if not isinstance(entry.message, dict):
        raise _invalid(f"{path}.message", "must be an object (the Waggle message as a dict)")
    for name in ("stage", "parent", "drone"):
        _check_optional_str(getattr(entry, name), f"{path}.{name}")
    if entry.latency_ms is not None:
        check_seconds(entry.latency_ms, f"{path}.latency_ms")
    check_int(entry.prompt_tokens, f"{path}.prompt_tokens")
    check_int(entry.completion_tokens, f"{path}.completion_tokens")
    if not _models_ok(entry.models):
        raise _invalid(
            f"{path}.models",
            f"must be a tuple of at most {MAX_MODELS} (model, prompt tokens, completion tokens)",
        )
    if not _cost_ok(entry.cost_usd):
        raise _invalid(f"{path}.cost_usd", "must be a finite number of US dollars ≥ 0")
    return entry


def prepare_commit(
    session: str, expect_version: int, state: dict[str, Any], entries: Sequence[Entry]
) -> PendingCommit:
    """Check and serialize one ``commit`` call; raise ``Invalid`` naming the bad field."""
    check_session(session)
    check_int(expect_version, "expect_version")
    if not isinstance(state, dict):
        raise _invalid("state", "must be an object (dict)")
    if isinstance(entries, str | bytes) or not isinstance(entries, Sequence):
        raise BadRequest("entries: must be a sequence of Entry")
    kept: list[Entry] = []
    messages: list[str] = []
    answered: set[str] = set()
    seen: set[str] = set()
    for i, raw in enumerate(entries):
        entry = _check_entry(raw, session, f"entries[{i}]")
        if entry.id in seen:
            continue
        seen.add(entry.id)
        messages.append(_dumps(entry.message, f"entries[{i}].message"))
        kept.append(entry)
        if entry.kind in ANSWER_KINDS and entry.parent is not None:
            answered.add(entry.parent)
    opens = [e.kind == "dispatch" and e.id not in answered for e in kept]
    return PendingCommit(session, expect_version, _dumps(state, "state"), kept, messages, opens)


def load_json(text: str) -> dict[str, Any]:
    value = orjson.loads(text)
    assert isinstance(value, dict)
    return value


__all__ = [
    "ANSWER_KINDS",
    "KINDS",
    "MAX_MODELS",
    "Entry",
    "ModelUsage",
    "PendingCommit",
    "Plan",
    "Row",
    "SessionState",
    "Totals",
    "check_id",
    "check_int",
    "check_kinds",
    "check_limit",
    "check_seconds",
    "check_session",
    "load_json",
    "models_from_json",
    "models_json",
    "plan_commit",
    "prepare_commit",
    "written_entries",
]
