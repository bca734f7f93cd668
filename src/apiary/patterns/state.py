"""The session's state document: plain JSON the journal stores between steps.

    {"version": 1,
     "flows": {input id: {"seg": k, "pending": n, "ctx": {...}, "s": {pattern state}}},
     "open":  {dispatch id: {"flow": input id, "stage": S, "seg": k}},
     "done":  {input id: "completed" | "failed"},
     "heard": {dispatch id: {"flow": input id, "seg": k, "next": n}}}   (only when not empty)

``flows`` holds the inputs still in progress (a conversation may have several at once); ``open``
every dispatch still waiting for an outcome — including stragglers of a segment that already has
its answer (swarm ``first``), whose outputs are still recorded when they come; ``heard`` the
answered dispatches whose agent may still print lines that the flow routes (a hierarchical
supervisor's), with the index the next late output will have; ``done`` lets a
re-sent input be recognised as a duplicate after its flow has ended. ``done`` keeps only the
last :data:`DONE_LIMIT` inputs: the journal serialises the whole document on every commit (and the
router keeps it in memory), so it must not grow with a session's age; an older input sent again
is the journal's to refuse (the router looks its entry id up before it runs an input).

Steps never mutate the document they are given: :func:`begin` copies the top level and the engine
copies a flow before touching it, so a router that retries a step after a version conflict (or a
test that replays one) still holds the state it started from.
"""

from __future__ import annotations

from typing import Any

STATE_VERSION = 1
DONE_LIMIT = 64


def initial_state() -> dict[str, Any]:
    """The state of a session that has seen nothing yet."""
    return {"version": STATE_VERSION, "flows": {}, "open": {}, "done": {}}


def normalize(state: Any) -> dict[str, Any]:
    """``state`` checked for shape; an empty or None state is a new session's. Raises
    ValueError naming the key when the document is not one the engine wrote."""
    if not state:
        return initial_state()
    if not isinstance(state, dict):
        raise ValueError(f"session state must be a JSON object, not {type(state).__name__}")
    if state.get("version") != STATE_VERSION:
        raise ValueError(
            f"session state: version must be {STATE_VERSION}, got {state.get('version')!r}"
        )
    for key in ("flows", "open", "done"):
        if not isinstance(state.get(key), dict):
            raise ValueError(f"session state: {key} must be an object")
    return state


def begin(state: dict[str, Any]) -> dict[str, Any]:
    """A copy to build the next state in: new top-level maps, flows shared until copied."""
    new = {
        "version": STATE_VERSION,
        "flows": dict(state["flows"]),
        "open": dict(state["open"]),
        "done": dict(state["done"]),
    }
    if state.get("heard"):
        new["heard"] = dict(state["heard"])
    return new


def forget_heard(state: dict[str, Any], flow_id: str) -> None:
    """Stop routing late outputs to a flow that ended (or left its segment): from now on they
    are recorded only."""
    heard = state.get("heard")
    if not heard:
        return
    for dispatch_id in [d for d, e in heard.items() if e["flow"] == flow_id]:
        del heard[dispatch_id]
    if not heard:
        del state["heard"]


def remember(state: dict[str, Any], input_id: str, outcome: str) -> None:
    """Mark an input ended, forgetting the oldest ended inputs beyond :data:`DONE_LIMIT`."""
    done: dict[str, str] = state["done"]
    done[input_id] = outcome
    while len(done) > DONE_LIMIT:
        del done[next(iter(done))]


def clone(value: Any) -> Any:
    """A deep copy of a JSON value — several times faster than :func:`copy.deepcopy`, which
    memoises for cycles and arbitrary objects that a JSON document cannot contain."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value
