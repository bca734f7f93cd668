"""event-driven: filters, re-routed outputs, hop limit, the final at quiescence."""

from __future__ import annotations

from typing import Any

from apiary.patterns import Engine

from .helpers import Run, hive, out, seed


def subscribers(**extra: object) -> Engine:
    entries: list[dict[str, Any]] = [
        {"name": "all", "agentRef": "e"},
        {
            "name": "orders",
            "agentRef": "e",
            "filter": {"type": "event", "metadata": {"topic": "order"}},
        },
        {"name": "tasks", "agentRef": "e", "filter": {"type": "task"}},
    ]
    return Engine(hive("event-driven", entries, **extra))


def test_filters_match_type_and_metadata() -> None:
    run = Run(subscribers())
    step = run.input("new order", type="event", topic="order")
    assert [d.stage for d in step.dispatches] == ["all", "orders"]
    assert all(d.message.type == "event" for d in step.dispatches)
    assert step.dispatches[0].message.metadata == {"topic": "order", "hops": "0"}

    run = Run(subscribers())
    assert [d.stage for d in run.input("job", id="in-2", type="task").dispatches] == [
        "all",
        "tasks",
    ]
    run = Run(subscribers())
    assert [d.stage for d in run.input("x", type="event", topic="other").dispatches] == ["all"]


def test_outputs_become_events_and_the_final_lists_everything() -> None:
    run = Run(subscribers())
    run.input("start", type="event", topic="none")
    step = run.reply(
        run.one("all"), out("placed", metadata={"topic": "order"}), out("log", "request")
    )
    # "placed" (a result → type event) matches all + orders, "log" (a request) only all; the
    # producer ("all") does not get its own outputs back
    routed = [(d.stage, d.message.payload, d.message.metadata["hops"]) for d in step.dispatches]
    assert routed == [("orders", "placed", "1")]
    assert step.dispatches[0].parent == step.records[0].id
    assert step.dispatches[0].message.metadata == {"topic": "order", "hops": "1"}
    assert step.finals == []
    step = run.reply(run.one("orders"), out("shipped", "task"))
    assert [d.stage for d in step.dispatches] == ["all", "tasks"]
    for dispatch in list(run.waiting()):
        run.reply(dispatch)  # a subscriber may answer nothing
    (final,) = run.finals
    assert final.message.payload == [
        {"stage": "all", "type": "event", "payload": "placed"},
        {"stage": "all", "type": "request", "payload": "log"},
        {"stage": "orders", "type": "task", "payload": "shipped"},
    ]
    assert run.engine.quiescent(run.state)


def test_partial_outputs_are_recorded_not_routed() -> None:
    run = Run(subscribers())
    run.input("start", type="event")
    step = run.reply(run.one("all"), out("half", more=True))
    assert step.dispatches == []
    assert [f.message.payload for f in step.finals] == [
        [{"stage": "all", "type": "event", "payload": "half"}]
    ]


def test_hop_limit_stops_ping_pong() -> None:
    pair = [{"name": "ping", "agentRef": "e"}, {"name": "pong", "agentRef": "e"}]
    run = Run(Engine(hive("event-driven", pair, eventDriven={"maxHops": 3})))
    run.input("ball", type="event")
    run.reply(run.one("pong"))  # pong ignores the serve; then ping and pong echo each other
    hops = []
    while run.waiting():
        (dispatch,) = run.waiting()
        hops.append((dispatch.stage, dispatch.message.metadata["hops"]))
        # an agent that echoes the whole message back, hops included
        run.reply(dispatch, out(dispatch.message.payload, metadata=dispatch.message.metadata))
    assert hops == [("ping", "0"), ("pong", "1"), ("ping", "2")]
    (note,) = run.kinds("event")
    assert note.message.payload["reason"] == "HopLimitReached"
    assert note.message.payload["hops"] == 3
    assert note.stage == "ping" and note.parent == run.kinds("output")[-1].id
    (final,) = run.finals
    assert [e["stage"] for e in final.message.payload] == ["ping", "pong", "ping"]


def test_max_hops_defaults() -> None:
    single = [{"name": "s", "agentRef": "e"}]
    assert Engine(hive("event-driven", single)).segments[0].max_hops == 8
    guarded = hive("event-driven", single, guardrails={"maxTurns": 4})
    assert Engine(guarded).segments[0].max_hops == 4


def test_an_event_nobody_wants_completes_at_once() -> None:
    picky = [{"name": "p", "agentRef": "e", "filter": {"metadata": {"topic": "a"}}}]
    run = Run(Engine(hive("event-driven", picky)))
    step = run.input("x", type="event", topic="b")
    assert step.dispatches == []
    assert step.finals[0].message.payload == []


def test_seed_event_driven_hive() -> None:
    run = Run(Engine(seed("08")))
    step = run.input("hello", type="event")
    assert [d.stage for d in step.dispatches] == ["subscriber1", "subscriber2"]
    run.reply(run.one("subscriber1"))
    run.reply(run.one("subscriber2"), out("seen", "response"))
    again = run.waiting()  # no filters: every subscriber but the producer gets the new event
    assert [(d.stage, d.message.type) for d in again] == [("subscriber1", "response")]
