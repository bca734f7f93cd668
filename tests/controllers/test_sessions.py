"""The session reaper: idle timeout, maximum duration, persistOnTerminate — with a fake clock."""

from __future__ import annotations

from datetime import timedelta

from apiary.controllers.sessions import ReaperSettings, SessionReaper
from apiary.journal import Entry, open_journal
from apiary.store import Store

from .helpers import FakeClock


def _hive(session: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "apiary.io/v1", "kind": "Hive",
            "metadata": {"name": "h", "namespace": "default"},
            "spec": {"pattern": "pipeline", "stages": [{"name": "a", "agentRef": "x"}],
                     "session": session}}  # fmt: skip


def _session(name: str, **spec: object) -> dict[str, object]:
    return {"apiVersion": "apiary.io/v1", "kind": "Session",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"hiveRef": "h", **spec}}  # fmt: skip


async def _phase(store: Store, name: str) -> tuple[str, str]:
    st = (await store.get("Session", "default", name)).get("status") or {}
    return st.get("phase", ""), st.get("reason", "")


async def test_idle_and_max_duration_time_sessions_out(store: Store, clock: FakeClock) -> None:
    store.clock = clock
    await store.create(_hive({"timeoutMinutes": 30, "maxDurationMinutes": 120}))
    await store.create(_session("idle"))
    await store.create(_session("busy"))
    await store.create(_session("tight", timeoutMinutes=5))
    reaper = SessionReaper(store, settings=ReaperSettings(clock=clock))
    clock.advance(6 * 60)
    await reaper.run_once()
    assert await _phase(store, "tight") == ("TimedOut", "IdleTimeout")
    assert await _phase(store, "idle") == ("", "")
    for minute in range(25, 141, 20):  # "busy" keeps being active, past 120 minutes
        clock.now = clock.now.replace() + timedelta(minutes=20)
        busy = await store.get("Session", "default", "busy")
        busy["status"] = {
            "phase": "Running",
            "lastActivityTime": clock.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        await store.update(busy, subresource="status")
        await reaper.run_once()
        if minute < 30:
            continue
        assert await _phase(store, "idle") == ("TimedOut", "IdleTimeout")
    assert await _phase(store, "busy") == ("TimedOut", "MaxDuration")


async def test_a_timed_out_session_is_handed_on_once_so_its_work_is_cancelled(
    store: Store, clock: FakeClock
) -> None:
    store.clock = clock
    await store.create(_hive({"timeoutMinutes": 5}))
    await store.create(_session("idle"))
    ended: list[str] = []

    async def on_ended(obj: dict[str, object]) -> None:
        ended.append(f"{obj['metadata']['name']}:{obj['status']['phase']}")  # type: ignore[index]

    reaper = SessionReaper(store, settings=ReaperSettings(clock=clock), on_ended=on_ended)
    clock.advance(6 * 60)
    await reaper.run_once()
    await reaper.run_once()
    assert ended == ["idle:TimedOut"]


async def test_ended_sessions_of_a_non_persistent_hive_are_deleted_after_retention(
    store: Store, clock: FakeClock
) -> None:
    store.clock = clock
    await store.create(_hive({"persistOnTerminate": False}))
    s = await store.create(_session("done"))
    s["status"] = {"phase": "Succeeded",
                   "completionTime": clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
    await store.update(s, subresource="status")
    async with open_journal("memory://") as journal:
        await journal.commit(
            "default/done",
            expect_version=0,
            state={},
            entries=[Entry("default/done", "i1", "input", {"payload": 1})],
        )
        reaper = SessionReaper(store, journal, ReaperSettings(clock=clock))
        await reaper.run_once()
        assert (await store.list("Session")).items  # still readable
        clock.advance(11 * 60)
        await reaper.run_once()
        assert not (await store.list("Session")).items
        assert await journal.read("default/done") == []
