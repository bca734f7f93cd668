"""One group-commit batch on PostgreSQL, in a few set-based statements.

A naive commit costs 3-4 round trips (check the version, insert entries, update the state,
notify); a batch of N commits would cost 4N. Here the batch is split into *rounds* — round k holds
the k-th commit of every session in the batch, so a round has at most one commit per session and
a session's commits keep their order — and each round is 3-4 statements whatever its size:

1. ``SELECT … FOR UPDATE`` the round's sessions, ordered by name: the version check reads them,
   and the row locks keep other replicas out until commit. Locks are always taken in session
   order (and only in round 1: later rounds' sessions are a subset), so two replicas' batches can
   never deadlock on each other.
2. Sessions that do not exist yet and are expected at version 0 get a placeholder row
   (``INSERT … ON CONFLICT DO NOTHING``); if another replica created the row first, this commit
   lost the race and answers None.
3. Which of the winners' entry ids the sessions already hold (idempotency, under the lock).
4. One statement writes everything else: the entries (``unnest`` of column arrays), the session
   rows, the dispatches answered, and ``pg_notify`` for the sessions written.

Step 3 is skipped on the first attempt: ids are assumed new, ``INSERT … ON CONFLICT DO NOTHING``
counts what went in, and only when an id already existed is the batch rolled back and redone with
the probe (``careful``) — so the usual batch costs one round trip less.

A batch with each session once is first tried without a transaction at all
(``write_unlocked``): one read of the versions (and the rows of new sessions created at version
0), then one statement (``_WRITE_IF``) that locks the sessions' rows in session order only where
they still have the versions read, and writes only if every one does — two or three round trips
instead of four or five (BEGIN, lock, create, write, COMMIT). The entries go in with a plain
INSERT, so an id the session already has fails the whole statement (nothing is written) and the
batch is redone the careful way; so does a batch that lost a race.
"""

from __future__ import annotations

from typing import Any

from apiary.journal.model import PendingCommit, Plan, models_json, plan_commit

CHANNEL = "apiary_journal"
_NOTIFY_BYTES = 7000  # PostgreSQL caps a payload at 8000 bytes

_LOCK = (
    "SELECT session, version, last_seq FROM journal_sessions"
    " WHERE session = ANY($1::text[]) ORDER BY session FOR UPDATE"
)
_CREATE = (
    "INSERT INTO journal_sessions (session, version, state, last_seq)"
    " SELECT s, 0, '{}', 0 FROM unnest($1::text[]) AS s ORDER BY s"
    " ON CONFLICT (session) DO NOTHING RETURNING session"
)
_EXISTING = (
    "SELECT e.session, e.id FROM journal_entries e"
    " JOIN unnest($1::text[], $2::text[]) AS t(session, id)"
    " ON e.session = t.session AND e.id = t.id"
)


def _writes(guard: str | None) -> str:
    """The CTEs that write a batch's column arrays ($1 to $26): ``ins`` the entries, ``ses`` the
    session rows, ``ans`` the dispatches answered, ``notified`` the NOTIFYs. With a ``guard``
    (the unlocked way) every one of them writes only if it holds, and the entries go in with a
    plain INSERT that fails on an id already journaled; without one (the locked way) such ids
    are skipped and the count of what went in tells."""
    also = f" AND {guard}" if guard else ""
    only = f" WHERE {guard}" if guard else ""
    return f"""ins AS (
    INSERT INTO journal_entries (session, seq, id, kind, stage, parent, drone, latency_ms,
                                 prompt_tokens, completion_tokens, created, message, pending,
                                 models, cost_usd)
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::float8[], $9::bigint[], $10::bigint[],
                         $11::float8[], $12::text[], $13::bool[], $14::text[], $15::float8[])
    {f"WHERE {guard}" if guard else "ON CONFLICT DO NOTHING"}
    RETURNING 1
), ses AS (
    UPDATE journal_sessions s
    SET version = t.version, state = t.state, last_seq = t.last_seq,
        messages = s.messages + t.messages, prompt_tokens = s.prompt_tokens + t.prompt,
        completion_tokens = s.completion_tokens + t.completion, cost_usd = s.cost_usd + t.cost
    FROM unnest($16::text[], $17::bigint[], $18::text[], $19::bigint[], $20::bigint[],
                $21::bigint[], $22::bigint[], $23::float8[])
         AS t(session, version, state, last_seq, messages, prompt, completion, cost)
    WHERE s.session = t.session{also}
), ans AS (
    UPDATE journal_entries e SET pending = NULL
    FROM unnest($24::text[], $25::text[]) AS t(session, id)
    WHERE e.session = t.session AND e.id = t.id AND e.kind = 'dispatch' AND e.pending{also}
), notified AS (
    SELECT pg_notify('apiary_journal', p) FROM unnest($26::text[]) AS p{only}
)"""


_WRITE = f"""
WITH {_writes(None)}
SELECT (SELECT count(*) FROM ins) + 0 * (SELECT count(*) FROM notified)
"""

_VERSIONS = (
    "SELECT session, version, last_seq FROM journal_sessions WHERE session = ANY($1::text[])"
)
_GUARD = "(SELECT yes FROM ok)"
_WRITE_IF = f"""
WITH cur AS (
    SELECT 1 FROM journal_sessions s
    JOIN unnest($16::text[], $27::bigint[]) AS g(session, version)
        ON s.session = g.session AND s.version = g.version
    ORDER BY s.session FOR UPDATE OF s
), ok AS (
    SELECT count(*) = $28 AS yes FROM cur
), {_writes(_GUARD)}
SELECT {_GUARD} AND (SELECT count(*) FROM ins) + 0 * (SELECT count(*) FROM notified) >= 0
"""


def rounds(batch: list[PendingCommit]) -> list[list[int]]:
    """Indexes into ``batch``: round k = the k-th commit of each session, sorted by session."""
    out: list[list[int]] = []
    seen: dict[str, int] = {}
    for i, c in enumerate(batch):
        k = seen.get(c.session, 0)
        seen[c.session] = k + 1
        if k == len(out):
            out.append([])
        out[k].append(i)
    for r in out:
        r.sort(key=lambda i: batch[i].session)
    return out


def notify_payloads(sessions: list[str]) -> list[str]:
    """Session names joined by newlines, in chunks that fit a NOTIFY payload."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for s in sessions:
        n = len(s.encode()) + 1
        if current and size + n > _NOTIFY_BYTES:
            chunks.append("\n".join(current))
            current, size = [], 0
        current.append(s)
        size += n
    if current:
        chunks.append("\n".join(current))
    return chunks


class IdsExisted(Exception):
    """An optimistic round met an entry id the session already had: roll back, redo carefully."""


async def write_batch(
    conn: Any, batch: list[PendingCommit], created: float, *, careful: bool = False
) -> list[Plan | None]:
    """Write a batch inside the caller's transaction; one Plan per commit, None = version lost.

    Optimistic unless ``careful``: entry ids are assumed new (the usual case), which saves the
    id probe; the insert's ``ON CONFLICT DO NOTHING`` count proves it, and a mismatch raises
    ``IdsExisted`` so the caller rolls back and runs the batch again with ``careful=True``.
    """
    plans: list[Plan | None] = [None] * len(batch)
    for idx in rounds(batch):
        await _write_round(conn, batch, idx, created, plans, careful)
    return plans


async def write_unlocked(
    conn: Any, batch: list[PendingCommit], created: float
) -> list[Plan | None] | None:
    """The batch in two round trips and no transaction (three when it starts a session), or
    None: write it with ``write_batch`` (a session twice in the batch, or a race lost — no
    entry was written). Raises asyncpg's UniqueViolationError when an entry id was journaled
    already (nothing written: redo it ``careful``)."""
    names = [c.session for c in batch]
    if len(set(names)) != len(names):
        return None
    current = {r[0]: (int(r[1]), int(r[2])) for r in await conn.fetch(_VERSIONS, names)}
    new = [c.session for c in batch if c.session not in current and c.expect_version == 0]
    if new:
        # Their rows at version 0 first, committed on their own: a row at version 0 with no
        # entries reads exactly as a session the journal does not hold, so one left behind by
        # a write that then loses its race changes nothing anyone can see.
        made = {r[0] for r in await conn.fetch(_CREATE, new)}
        if len(made) != len(new):
            return None  # another writer created one meanwhile: the locked way decides
        current.update(dict.fromkeys(made, (0, 0)))
    plans: list[Plan | None] = [None] * len(batch)
    winners = [
        i for i, c in enumerate(batch)
        if c.session in current and current[c.session][0] == c.expect_version
    ]  # fmt: skip
    if not winners:
        return plans  # versions only grow: a commit that lost here loses under a lock too
    winners.sort(key=lambda i: batch[i].session)
    cols = _columns(batch, winners, current, {}, created, plans)
    guard = [current[batch[i].session][0] for i in winners]
    wrote = await conn.fetchval(_WRITE_IF, *cols, guard, len(winners))
    return plans if wrote else None


async def _write_round(
    conn: Any,
    batch: list[PendingCommit],
    idx: list[int],
    created: float,
    plans: list[Plan | None],
    careful: bool,
) -> None:
    names = [batch[i].session for i in idx]
    current = {r[0]: (int(r[1]), int(r[2])) for r in await conn.fetch(_LOCK, names)}
    new = [
        batch[i].session
        for i in idx
        if batch[i].session not in current and batch[i].expect_version == 0
    ]
    made: set[str] = set()
    if new:
        made = {r[0] for r in await conn.fetch(_CREATE, new)}
        for s in made:
            current[s] = (0, 0)
    winners = [i for i in idx if batch[i].session in current]
    winners = [i for i in winners if current[batch[i].session][0] == batch[i].expect_version]
    if not winners:
        return
    existing: dict[str, set[str]] = {}
    probe = [
        (batch[i].session, e.id)
        for i in winners
        if careful and batch[i].session not in made
        for e in batch[i].entries
    ]
    probe_s = [s for s, _ in probe]
    probe_i = [e for _, e in probe]
    if probe_s:
        for r in await conn.fetch(_EXISTING, probe_s, probe_i):
            existing.setdefault(r[0], set()).add(r[1])
    cols = _columns(batch, winners, current, existing, created, plans)
    inserted = await conn.fetchval(_WRITE, *cols)
    if inserted != len(cols[0]):
        raise IdsExisted(f"{len(cols[0]) - inserted} entry id(s) already journaled")


def _columns(
    batch: list[PendingCommit],
    winners: list[int],
    current: dict[str, tuple[int, int]],
    existing: dict[str, set[str]],
    created: float,
    plans: list[Plan | None],
) -> list[list[Any]]:
    """The statement's column arrays for the winning commits (``plans`` filled in for them):
    entries $1 to $15, sessions $16 to $23, dispatches answered $24 and $25, NOTIFY payloads $26."""
    cols: list[Any] = [[] for _ in range(25)]
    for i in winners:
        c = batch[i]
        version, last_seq = current[c.session]
        plan = plan_commit(c, existing.get(c.session, ()), last_seq)
        plans[i] = plan
        for row in plan.rows:
            e = row.entry
            for col, value in enumerate(
                (
                    c.session,
                    row.seq,
                    e.id,
                    e.kind,
                    e.stage,
                    e.parent,
                    e.drone,
                    None if e.latency_ms is None else float(e.latency_ms),
                    e.prompt_tokens,
                    e.completion_tokens,
                    created,
                    row.message,
                    True if row.pending else None,
                    models_json(e.models),
                    float(e.cost_usd) or None,
                )
            ):
                cols[col].append(value)
        for col, field in enumerate(
            (
                c.session,
                version + 1,
                c.state,
                plan.last_seq,
                len(plan.rows),
                plan.prompt_tokens,
                plan.completion_tokens,
                float(plan.cost_usd),
            ),
            start=15,
        ):
            cols[col].append(field)
        for dispatch in plan.close:
            cols[23].append(c.session)
            cols[24].append(dispatch)
    cols.append(notify_payloads([batch[i].session for i in winners]))
    return cols


__all__ = ["CHANNEL", "IdsExisted", "notify_payloads", "rounds", "write_batch", "write_unlocked"]
