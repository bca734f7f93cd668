"""hierarchical: tasks, batched results, notes, finals, turn limits, addressing errors."""

from __future__ import annotations

from apiary.patterns import Engine, make_id

from .helpers import Run, hive, out, seed, stages

TEAM = hive("hierarchical", stages("boss", "w1", "w2"))


def test_one_task_round_trip() -> None:
    run = Run(Engine(TEAM))
    turn1 = run.input("plan a trip").dispatches[0]
    assert turn1.stage == "boss" and turn1.message.metadata == {"turn": "1"}
    step = run.reply(turn1, out("book flights", "task", dest="w1"))
    (task,) = step.dispatches
    (order,) = step.records
    assert (task.stage, task.message.type, task.message.payload) == ("w1", "task", "book flights")
    assert task.message.source_agent_id == "boss" and task.parent == order.id
    assert task.id == make_id(order.id, "w1", 0)

    step = run.reply(task, "flights booked")
    (turn2,) = step.dispatches
    assert turn2.stage == "boss" and turn2.message.type == "result"
    assert turn2.message.payload == "flights booked"
    assert turn2.message.correlation_id == task.id
    assert turn2.message.source_agent_id == "w1"
    assert turn2.message.metadata == {"turn": "2"}
    assert turn2.parent == step.records[0].id

    step = run.reply(turn2, out("trip planned", "result"))
    (final,) = step.finals
    assert final.message.payload == "trip planned"
    assert final.message.correlation_id == "in-1"
    assert run.engine.quiescent(run.state)


def test_several_tasks_are_batched_in_dispatch_order() -> None:
    run = Run(Engine(TEAM))
    turn1 = run.input("q").dispatches[0]
    step = run.reply(
        turn1,
        out("part a", "task", dest="w1"),
        out("part b", "task", stage="w2"),  # metadata.stage addresses too
        out("part c", "task", dest="w1"),
    )
    tasks = step.dispatches
    assert [t.stage for t in tasks] == ["w1", "w2", "w1"]
    assert "stage" not in tasks[1].message.metadata
    assert run.reply(tasks[2], "C").dispatches == []  # answers arrive in any order
    assert run.reply(tasks[0], "A").dispatches == []
    (turn2,) = run.reply(tasks[1], "B").dispatches
    assert turn2.message.payload == [
        {"stage": "w1", "correlationId": tasks[0].id, "payload": "A"},
        {"stage": "w2", "correlationId": tasks[1].id, "payload": "B"},
        {"stage": "w1", "correlationId": tasks[2].id, "payload": "C"},
    ]
    assert turn2.message.correlation_id == turn1.id


def test_event_notes_are_recorded_only() -> None:
    run = Run(Engine(TEAM))
    turn1 = run.input("q").dispatches[0]
    step = run.reply(turn1, out("thinking...", "event"), out("go", "task", dest="w2"))
    assert [d.stage for d in step.dispatches] == ["w2"]
    assert [r.message.payload for r in step.records] == ["thinking...", "go"]
    assert step.finals == []


def test_final_ends_the_flow_and_late_task_results_are_recorded() -> None:
    run = Run(Engine(TEAM))
    turn1 = run.input("q").dispatches[0]
    step = run.reply(
        turn1, out("side job", "task", dest="w1"), out("done", "response"), out("ignored")
    )
    assert [f.message.payload for f in step.finals] == ["done"]
    (task,) = run.waiting("w1")
    late = run.reply(task, "side result")
    assert [r.kind for r in late.records] == ["output"]
    assert (late.dispatches, late.finals) == ([], [])
    assert run.engine.quiescent(run.state)


def test_partial_supervisor_result_is_not_final() -> None:
    run = Run(Engine(TEAM))
    turn1 = run.input("q").dispatches[0]
    step = run.reply(turn1, out("draft", more=True), out("ask", "task", dest="w1"))
    assert step.finals == [] and [d.stage for d in step.dispatches] == ["w1"]


def test_role_supervisor_picks_the_entry_stage() -> None:
    team = hive(
        "hierarchical",
        [*stages("w1"), {"name": "lead", "agentRef": "llm", "role": "supervisor"}],
    )
    run = Run(Engine(team))
    assert run.input("q").dispatches[0].stage == "lead"


def test_max_turns_exceeded_fails_the_flow() -> None:
    run = Run(Engine(hive("hierarchical", stages("boss", "w1"), guardrails={"maxTurns": 2})))
    turn = run.input("loop").dispatches[0]
    task = run.reply(turn, out("again", "task", dest="w1")).dispatches[0]
    turn = run.reply(task, "r1").dispatches[0]
    assert turn.message.metadata["turn"] == "2"
    task = run.reply(turn, out("again", "task", dest="w1")).dispatches[0]
    step = run.reply(task, "r2")
    assert step.dispatches == []
    assert step.failure is not None and step.failure[0] == "MaxTurnsExceeded"
    assert "maxTurns is 2" in step.failure[1]
    assert run.engine.input_status(run.state, "in-1") == "failed"


def test_max_turns_defaults_to_ten_and_stage_guardrails_win() -> None:
    assert Engine(TEAM).segments[0].max_turns == 10
    own = [{"name": "boss", "agentRef": "a", "guardrails": {"maxTurns": 3}}, *stages("w1")]
    engine = Engine(hive("hierarchical", own, guardrails={"maxTurns": 7}))
    assert engine.segments[0].max_turns == 3


def test_unknown_destination_and_unaddressed_task_fail_clearly() -> None:
    run = Run(Engine(TEAM))
    turn = run.input("q").dispatches[0]
    step = run.reply(turn, out("x", "task", dest="w1"), out("y", "task", dest="nobody"))
    assert step.failure is not None and step.failure[0] == "UnknownStage"
    assert "'nobody'" in step.failure[1] and "w1, w2" in step.failure[1]
    assert step.dispatches == []  # the task made before the bad output is not sent

    run = Run(Engine(TEAM))
    turn = run.input("q").dispatches[0]
    step = run.reply(turn, out("y", "task"))
    assert step.failure is not None and step.failure[0] == "NoDestination"

    run = Run(Engine(TEAM))
    turn = run.input("q").dispatches[0]
    step = run.reply(turn, out("hmm", "event"))
    assert step.failure is not None and step.failure[0] == "NoOutput"


def test_seed_hierarchical_hive() -> None:
    run = Run(Engine(seed("06")))
    turn = run.input("q").dispatches[0]
    assert turn.stage == "supervisor"
    a, b = run.reply(
        turn, out(1, "task", dest="worker1"), out(2, "task", dest="worker2")
    ).dispatches
    run.reply(a, 10)
    final_turn = run.reply(b, 20).dispatches[0]
    assert [p["payload"] for p in final_turn.message.payload] == [10, 20]
    assert run.reply(final_turn, out(30)).finals[0].message.payload == 30
