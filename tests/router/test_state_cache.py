"""The router's state cache hands the committed document to the next step without a decode, and
never to two steps at once: the step that takes it owns it."""

from __future__ import annotations

from typing import Any, cast

from apiary.bus import Bus
from apiary.journal import open_journal
from apiary.router.service import Router
from apiary.router.sessions import SessionDirectory, SessionInfo

INFO = SessionInfo(cell="c", name="s", hive="h", phase="Running", job=False, uid="u1")


async def test_the_committed_state_is_taken_by_the_next_step_not_copied() -> None:
    async with open_journal("memory://") as journal:
        router = Router(journal, cast(Bus, None), cast(SessionDirectory, None))
        state: dict[str, Any] = {"version": 1, "flows": {}, "open": {}, "done": {"a": "x"}}
        version = await journal.commit(INFO.key, expect_version=0, state=state, entries=[])
        assert version is not None
        router._remember(INFO, version, state)

        taken, cached = await router._load(INFO)
        assert cached and taken.state is state and taken.version == version  # no decode or copy
        taken.state["done"]["b"] = "changed in place by the step"
        other, cached = await router._load(INFO)  # a concurrent step: the journal, unshared
        assert not cached and other.state is not state
        assert other.state["done"] == {"a": "x"} and other.version == version


async def test_a_recreated_session_does_not_inherit_the_cached_state() -> None:
    async with open_journal("memory://") as journal:
        router = Router(journal, cast(Bus, None), cast(SessionDirectory, None))
        router._remember(INFO, 7, {"version": 1, "flows": {"old": {}}, "open": {}, "done": {}})
        again = SessionInfo(cell="c", name="s", hive="h", phase="", job=False, uid="u2")
        fresh, cached = await router._load(again)
        assert not cached
        assert fresh.state.get("flows") in (None, {}) and fresh.version == 0


async def test_nothing_to_do_on_a_cached_state_is_decided_again_on_the_journal() -> None:
    """Another replica committed since this router cached the session (it opened the dispatch
    an outcome answers): a "duplicate, nothing to do" from the stale copy must not stand — a
    decision that commits nothing is never version-checked."""
    async with open_journal("memory://") as journal:
        router = Router(journal, cast(Bus, None), cast(SessionDirectory, None))
        old: dict[str, Any] = {"version": 1, "flows": {}, "open": {}, "done": {}}
        v1 = await journal.commit(INFO.key, expect_version=0, state=old, entries=[])
        assert v1 is not None
        router._remember(INFO, v1, old)
        new = {**old, "open": {"d2": {"flow": "in", "stage": "b", "seg": 0}}}
        assert await journal.commit(INFO.key, expect_version=v1, state=new, entries=[])

        seen: list[dict[str, Any]] = []

        def plan(state: dict[str, Any]) -> None:
            seen.append(state["open"])
            return None  # d2 not open in what it was given: "a duplicate"

        assert await router._run(INFO, plan) is None
        assert seen == [{}, {"d2": {"flow": "in", "stage": "b", "seg": 0}}]
