"""Session status lost between a journal commit and its status write (a kill -9, or a store away
through shutdown) is re-derived from the journal at the next start (apiary.router.reconcile).

A real router (no drones: the tests hand it the outcomes a drone would send) over a real SQLite
store and journal; the router's status patches are recorded and dropped, as a crash drops them,
and then the reconcile pass writes through a real :class:`SessionStatusWriter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from apiary.bus import Bus, open_bus
from apiary.errors import Unavailable
from apiary.journal import Journal, SessionState, open_journal
from apiary.router import Router, SessionDirectory
from apiary.router.reconcile import StatusReconciler
from apiary.router.sessions import JOB_LABEL, SessionInfo
from apiary.router.status import SessionStatusWriter
from apiary.store import Store, open_store
from apiary.waggle import Message
from apiary.waggle.envelope import Outcome

Obj = dict[str, Any]
CELL = "default"


class Counting:
    """The real store, counting the Session status changes written through it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.changed: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def update_status_many(self, kind: str, changes: list[Any]) -> Any:
        self.changed += [name for _, name, _ in changes]
        return await self.store.update_status_many(kind, changes)


@dataclass
class Rig:
    store: Store
    journal: Journal
    bus: Bus
    router: Router
    counting: Counting
    writer: SessionStatusWriter
    patches: dict[str, Obj] = field(default_factory=dict)
    """The router's status patches by session, merged, as they were lost."""

    async def session(self, name: str, *, job: bool = False, hive: str = "h") -> None:
        meta: Obj = {"name": name, "namespace": CELL}
        if job:
            meta["labels"] = {JOB_LABEL: "true"}
        obj = await self.store.create(
            {"apiVersion": "apiary.io/v1", "kind": "Session", "metadata": meta,
             "spec": {"hiveRef": hive}}
        )  # fmt: skip
        obj["status"] = {"phase": "Running"}
        await self.store.update(obj, subresource="status")

    async def set_status(self, name: str, **fields: Any) -> None:
        obj = await self.store.get("Session", CELL, name)
        obj["status"] = {**(obj.get("status") or {}), **fields}
        await self.store.update(obj, subresource="status")

    async def status(self, name: str) -> Obj:
        return dict((await self.store.get("Session", CELL, name)).get("status") or {})

    async def send(self, name: str, payload: Any = "hi") -> str:
        """An input, as the API hands it to the router; the id of the dispatch it opened."""
        await self.router.submit(CELL, name, Message(payload))
        key = f"{CELL}/{name}"
        dispatches = await self.journal.read(key, kinds={"dispatch"})
        open_ = [d for d in dispatches if not await self.journal.is_answered(key, d.id)]
        return open_[-1].id

    async def answer(
        self, name: str, dispatch: str, payload: Any = None, error: tuple[str, str] | None = None,
        stage: str = "s",
    ) -> None:  # fmt: skip
        """The outcome a drone would send for ``dispatch``."""
        info = await self.router.sessions.get(CELL, name)
        outputs = [] if payload is None else [{"type": "result", "payload": payload,
                                               "version": "1.0"}]  # fmt: skip
        await self.router.handle_outcome(
            info, Outcome(dispatch, info.key, info.hive, stage, "drone-1", outputs, error=error)
        )

    async def reconcile(self, journal: Journal | None = None, store: Any = None) -> Any:
        done = await StatusReconciler(
            store or self.store, journal or self.journal, self.writer, page=3
        ).run_once()
        await self.writer.flush()
        return done


def _lose(rig: Rig) -> None:
    def lost(info: SessionInfo, patch: Obj) -> None:
        rig.patches.setdefault(info.name, {}).update(patch)

    rig.router.on_status = lost


def _hive(name: str, **stage: Any) -> Obj:
    return {
        "apiVersion": "apiary.io/v1", "kind": "Hive", "metadata": {"name": name, "namespace": CELL},
        "spec": {"pattern": "pipeline", "stages": [{"name": "s", "agentRef": "a", **stage}],
                 "routing": {"retryPolicy": {"maxRetries": 0}}},
    }  # fmt: skip


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(f"sqlite:///{tmp_path / 'store.db'}"))
        journal = await stack.enter_async_context(
            open_journal(f"sqlite:///{tmp_path / 'journal.db'}")
        )
        bus = await stack.enter_async_context(open_bus("memory://"))
        await store.create(_hive("h"))
        await store.create(_hive("gated", approval="required"))
        router = Router(journal, bus, SessionDirectory(store, ttl=0.0), sweep_on_start=False)
        counting = Counting(store)
        writer = SessionStatusWriter(counting, journal, interval=0.0, retry=(0.01,))  # type: ignore[arg-type]
        rig = Rig(store, journal, bus, router, counting, writer)
        _lose(rig)
        yield rig
        await writer.flush()


def _shown(status: Obj, *fields: str) -> dict[str, Any]:
    return {f: status.get(f) for f in fields}


async def test_a_job_whose_final_status_was_lost_ends_succeeded_with_its_output(rig: Rig) -> None:
    await rig.session("job", job=True)
    await rig.answer("job", await rig.send("job"), "HI")
    assert rig.patches["job"] == {"output": "HI", "phase": "Succeeded"}  # what the crash lost
    assert (await rig.status("job"))["phase"] == "Running"

    done = await rig.reconcile()

    got = await rig.status("job")
    assert _shown(got, "phase", "output") == {"phase": "Succeeded", "output": "HI"}
    assert got["messageCount"] == (await rig.journal.totals(f"{CELL}/job")).entries == 4
    assert "completionTime" in got
    assert (done.sessions, done.written, done.failed) == (1, 1, 0)


async def test_a_failed_and_a_dead_lettered_job_end_failed_with_the_routers_reason(
    rig: Rig,
) -> None:
    await rig.session("rejected", job=True)
    await rig.answer("rejected", await rig.send("rejected"), error=("Rejected", "no thanks"))
    await rig.session("dead", job=True)
    await rig.answer("dead", await rig.send("dead"), error=("AgentError", "boom"))
    assert rig.patches["rejected"]["reason"] == "Rejected"
    assert rig.patches["dead"]["reason"] == "DeadLettered"

    await rig.reconcile()

    for name in ("rejected", "dead"):
        got = await rig.status(name)
        assert _shown(got, "phase", "reason", "message") == rig.patches[name], name
        assert got["phase"] == "Failed"


async def test_a_session_closed_meanwhile_stays_closed_and_shows_its_last_output(
    rig: Rig,
) -> None:
    await rig.session("closed", job=True)
    await rig.answer("closed", await rig.send("closed"), "HI")
    await rig.set_status("closed", phase="Closed", reason="Closed", message="closed by the client")

    await rig.reconcile()

    got = await rig.status("closed")
    assert _shown(got, "phase", "reason", "message", "output") == {
        "phase": "Closed", "reason": "Closed", "message": "closed by the client", "output": "HI",
    }  # fmt: skip
    assert got["messageCount"] == 4


async def test_an_open_session_gets_its_newest_output_and_approval_holds(rig: Rig) -> None:
    await rig.session("chat")
    await rig.answer("chat", await rig.send("chat", "one"), "ONE")
    rig.router.on_status = rig.writer.update  # this one was written...
    await rig.writer.flush()
    _lose(rig)
    await rig.answer("chat", await rig.send("chat", "two"), "TWO")  # ...this one was lost
    await rig.session("held", hive="gated")
    await rig.send("held")
    assert rig.patches == {
        "chat": {"output": "TWO"},
        "held": {"phase": "WaitingForApproval", "pendingApproval": "s"},
    }

    await rig.reconcile()

    chat = await rig.status("chat")
    assert _shown(chat, "phase", "output") == {"phase": "Running", "output": "TWO"}
    assert chat["messageCount"] == 8
    held = await rig.status("held")
    assert _shown(held, "phase", "pendingApproval") == rig.patches["held"]


async def test_sessions_that_show_what_their_journal_says_cost_no_write(rig: Rig) -> None:
    rig.router.on_status = rig.writer.update  # nothing lost this time
    await rig.session("job", job=True)
    await rig.answer("job", await rig.send("job"), "HI")
    await rig.session("dead", job=True)
    await rig.answer("dead", await rig.send("dead"), error=("AgentError", "boom"))
    await rig.session("chat")
    await rig.answer("chat", await rig.send("chat"), "HI")
    await rig.session("held", hive="gated")
    await rig.send("held")
    await rig.session("quiet")  # nothing journaled
    await rig.session("closed")
    await rig.set_status("closed", phase="Closed", reason="Closed")  # nothing journaled either
    await rig.writer.flush()
    before = {name: await rig.status(name) for name in ("job", "dead", "chat", "held", "closed")}
    rig.counting.changed.clear()

    done = await rig.reconcile()

    assert rig.counting.changed == []
    assert (done.sessions, done.written, done.failed) == (6, 0, 0)
    assert done.read == 3  # the open ones and the dead-lettered job; not the ended job
    for name, status in before.items():
        assert await rig.status(name) == status, name

    # The pass is level-triggered: a second pass after a repair writes nothing either.
    _lose(rig)
    await rig.session("lost", job=True)
    await rig.answer("lost", await rig.send("lost"), "HI")
    assert (await rig.reconcile()).written == 1
    rig.counting.changed.clear()
    assert (await rig.reconcile()).written == 0
    assert rig.counting.changed == []


class Broken:
    """The real journal, failing to load one session's state."""

    def __init__(self, journal: Journal, broken: str) -> None:
        self.journal, self.broken = journal, broken

    def __getattr__(self, name: str) -> Any:
        return getattr(self.journal, name)

    async def load(self, session: str) -> SessionState:
        if session == self.broken:
            raise ValueError("state unreadable")
        return await self.journal.load(session)


async def test_a_session_that_cannot_be_reconciled_is_named_and_the_pass_goes_on(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("a-broken", "b-ok"):
        await rig.session(name, job=True)
        await rig.answer(name, await rig.send(name), "HI")
    # A state whose dead letter is not what the router writes: a bug, or a hand edit.
    await rig.session("c-garbled", job=True)
    await rig.send("c-garbled")
    key = f"{CELL}/c-garbled"
    current = await rig.journal.load(key)
    held = {"x": {"reason": "DeadLettered"}}
    garbled = {**current.state, "router": {"attempts": {}, "held": held}}
    assert await rig.journal.commit(key, expect_version=current.version, state=garbled, entries=[])
    await rig.session("d-ok", job=True)
    await rig.answer("d-ok", await rig.send("d-ok"), "HI")

    with caplog.at_level(logging.WARNING, logger="apiary.router"):
        done = await rig.reconcile(journal=Broken(rig.journal, f"{CELL}/a-broken"))  # type: ignore[arg-type]

    assert (done.sessions, done.written, done.failed) == (4, 2, 2)
    for name in ("b-ok", "d-ok"):
        assert (await rig.status(name))["phase"] == "Succeeded", name
    assert (await rig.status("a-broken"))["phase"] == "Running"
    named = {r.__dict__.get("session") for r in caplog.records if "not reconciled" in r.message}
    assert named == {"a-broken", "c-garbled"}


class Away:
    """The real store, unavailable for its next ``fail`` lists (PostgreSQL restarting)."""

    def __init__(self, store: Store, fail: int) -> None:
        self.store, self.fail = store, fail

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def list(self, *args: Any, **kwargs: Any) -> Any:
        if self.fail > 0:
            self.fail -= 1
            raise Unavailable("PostgreSQL store unavailable: connection refused")
        return await self.store.list(*args, **kwargs)


async def test_a_store_unavailable_at_start_is_waited_for_with_the_writers_back_off(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await rig.session("job", job=True)
    await rig.answer("job", await rig.send("job"), "HI")
    away = Away(rig.store, fail=3)
    with caplog.at_level(logging.INFO, logger="apiary.router"):
        done = await asyncio.wait_for(rig.reconcile(store=away), 5.0)
    assert away.fail == 0 and done.written == 1
    assert (await rig.status("job"))["phase"] == "Succeeded"
    waits = [r for r in caplog.records if "reconcile waits" in r.message]
    assert len(waits) == 1  # one warning per outage, not one per try


class Racing:
    """The real journal; while the pass reads the chat session's entries the first time, the
    router takes that session's next answer (and its status patch is written at once)."""

    def __init__(self, journal: Journal, rig: Rig, dispatch: str) -> None:
        self.journal, self.rig, self.dispatch = journal, rig, dispatch
        self.raced = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.journal, name)

    async def read(self, session: str, *args: Any, **kwargs: Any) -> Any:
        got = await self.journal.read(session, *args, **kwargs)
        if session == f"{CELL}/chat" and not self.raced:
            self.raced = True
            await self.rig.answer("chat", self.dispatch, "TWO")
            await self.rig.writer.flush()
            assert (await self.rig.status("chat"))["output"] == "TWO"
        return got


async def test_a_session_that_commits_during_the_pass_shows_its_newest_status(rig: Rig) -> None:
    await rig.session("chat")
    await rig.answer("chat", await rig.send("chat", "one"), "ONE")  # lost
    second = await rig.send("chat", "two")
    rig.router.on_status = rig.writer.update  # the router runs on while the pass does
    racing = Racing(rig.journal, rig, second)

    await rig.reconcile(journal=racing)  # type: ignore[arg-type]

    assert racing.raced
    got = await rig.status("chat")
    assert got["output"] == "TWO"  # not the ONE the pass had worked out before the answer came
    assert got["messageCount"] == (await rig.journal.totals(f"{CELL}/chat")).entries


async def test_ended_sessions_cost_no_journal_read_and_the_pass_is_quick(rig: Rig) -> None:
    """Mostly ended jobs that show their output (their journal totals are read, in one read a
    page, never their state or entries), some open sessions and some lost finals. 2,000 such
    sessions take ~50 ms on SQLite (docs/sessions.md); 400 here keep the test short."""
    rig.router.on_status = rig.writer.update
    n, lost = 400, 40
    for i in range(n):
        name = f"s{i:04d}"
        await rig.session(name, job=i % 4 != 0)
        if i < n - lost:
            dispatch = await rig.send(name, i)
            if i % 4 != 0:  # a job: answered (3 in 4); the others stay open, waiting
                await rig.answer(name, dispatch, f"out {i}")
        if i == n - lost - 1:
            await rig.writer.flush()
            _lose(rig)
        if i >= n - lost:
            await rig.answer(name, await rig.send(name, i), f"out {i}")
    started = time.perf_counter()
    done = await StatusReconciler(rig.store, rig.journal, rig.writer).run_once()
    await rig.writer.flush()
    took = time.perf_counter() - started
    assert done.sessions == n and done.failed == 0
    assert done.written == lost
    assert done.read == n // 4 + lost * 3 // 4  # open ones and the lost ones; no ended job
    assert (await rig.status(f"s{n - 1:04d}"))["phase"] == "Succeeded"
    assert took < 5.0


def test_apiaryd_reconciles_at_start_what_a_kill_9_lost(tmp_path: Path) -> None:
    """The wiring: a job whose final is in apiaryd's journal but not in its status (written
    here while apiaryd was down, as a kill -9 right after the commit leaves it) shows
    Succeeded with its output soon after the next start."""
    import httpx

    from apiary.journal import Entry
    from server.daemon_proc import start

    base = "/api/v1/cells/default"
    data = tmp_path / "data"
    d = start(data, "--no-local-node")
    try:
        agent = {"runtime": {"command": ["cat"]}, "interface": {"format": "text"}}
        hive = {"pattern": "pipeline", "stages": [{"name": "s", "agentRef": "cat"}]}
        objects = [("AgentSpec", "agentspecs", "cat", agent), ("Hive", "hives", "h", hive),
                   ("Session", "sessions", "job", {"hiveRef": "h"})]  # fmt: skip
        for kind, path, name, spec in objects:
            meta = {"name": name, "labels": {JOB_LABEL: "true"}}
            obj = {"apiVersion": "apiary.io/v1", "kind": kind, "metadata": meta, "spec": spec}
            r = httpx.post(f"{d.url}{base}/{path}", json=obj, headers=d.headers, timeout=10)
            assert r.status_code < 300, r.text
    finally:
        d.kill9()

    async def commit() -> None:
        async with open_journal(f"sqlite:///{data / 'journal.db'}") as journal:
            key = f"{CELL}/job"
            entries = [Entry(key, "in-1", "input", Message("hi", id="in-1").to_dict()),
                       Entry(key, "f-1", "final", Message("HI", "result").to_dict(),
                             parent="in-1")]  # fmt: skip
            assert await journal.commit(key, expect_version=0, state={}, entries=entries)

    asyncio.run(commit())
    d = start(data, "--no-local-node")
    try:
        deadline = time.monotonic() + 10
        while True:
            r = httpx.get(f"{d.url}{base}/sessions/job", headers=d.headers, timeout=5)
            status = r.json().get("status") or {}
            if status.get("phase") == "Succeeded" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert _shown(status, "phase", "output", "messageCount") == {
            "phase": "Succeeded", "output": "HI", "messageCount": 2,
        }  # fmt: skip
    finally:
        d.terminate()
