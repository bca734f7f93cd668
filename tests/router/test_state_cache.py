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

        taken = await router._load(INFO)
        assert taken.state is state and taken.version == version  # no decode, no copy
        taken.state["done"]["b"] = "changed in place by the step"
        other = await router._load(INFO)  # a concurrent step: reads the journal, unshared
        assert other.state is not state
        assert other.state["done"] == {"a": "x"} and other.version == version


async def test_a_recreated_session_does_not_inherit_the_cached_state() -> None:
    async with open_journal("memory://") as journal:
        router = Router(journal, cast(Bus, None), cast(SessionDirectory, None))
        router._remember(INFO, 7, {"version": 1, "flows": {"old": {}}, "open": {}, "done": {}})
        again = SessionInfo(cell="c", name="s", hive="h", phase="", job=False, uid="u2")
        fresh = await router._load(again)
        assert fresh.state.get("flows") in (None, {}) and fresh.version == 0
