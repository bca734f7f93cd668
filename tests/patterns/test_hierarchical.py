"""hierarchical: tasks keep the supervisor's ids, results come back one by one, late lines are
routed, rounds are bounded, addressing errors are clear."""

from __future__ import annotations

from apiary.patterns import Engine, make_id

from .helpers import Run, hive, out, seed, stages

TEAM = hive("hierarchical", stages("boss", "w1", "w2"))


def test_one_task_round_trip_keeps_the_supervisors_id() -> None:
    run = Run(Engine(TEAM))
    turn1 = run.input("plan a trip").dispatches[0]
    assert turn1.stage == "boss" and "reply" not in turn1.message.metadata
    step = run.reply(turn1, out("book flights", "task", dest="w1", id="t-1"))
    (task,) = step.dispatches
    (order,) = step.records
    assert (task.stage, task.message.type, task.message.payload) == ("w1", "task", "book flights")
    assert task.message.id == "t-1"  # the agent's id, kept
    assert task.message.source_agent_id == "boss" and task.parent == order.id
    assert task.id == make_id(order.id, "w1", 0)

    step = run.reply(task, "flights booked")
    (back,) = step.dispatches
    assert back.stage == "boss" and back.message.type == "result"
    assert back.message.payload == "flights booked"
    assert back.message.correlation_id == "t-1"
    assert back.message.source_agent_id == "w1"
    assert back.message.metadata["reply"] == "optional"  # the supervisor answers when ready

    step = run.reply(back, out("trip planned", "result"))
    (final,) = step.finals
    assert final.message.payload == "trip planned"
    assert final.message.correlation_id == "in-1"
    assert run.engine.quiescent(run.state)


def test_each_result_comes_back_on_its_own_as_it_arrives() -> None:
    run = Run(Engine(TEAM))
    turn1 = run.input("q").dispatches[0]
    step = run.reply(
        turn1,
        out("part a", "task", dest="w1", id="a"),
        out("part b", "task", stage="w2", id="b"),  # metadata.stage addresses too
        out("part c", "task", dest="w1", id="c"),
    )
    tasks = step.dispatches
    assert [t.stage for t in tasks] == ["w1", "w2", "w1"]
    assert "stage" not in tasks[1].message.metadata
    (r_c,) = run.reply(tasks[2], "C").dispatches  # answers arrive in any order
    (r_a,) = run.reply(tasks[0], "A").dispatches
    (r_b,) = run.reply(tasks[1], "B").dispatches
    assert [(r.message.correlation_id, r.message.payload) for r in (r_c, r_a, r_b)] == [
        ("c", "C"), ("a", "A"), ("b", "B"),
    ]  # fmt: skip
    assert {r.message.metadata.get("reply") for r in (r_c, r_a, r_b)} == {"optional"}
    assert [r.message.source_agent_id for r in (r_c, r_a, r_b)] == ["w1", "w1", "w2"]
    # The supervisor took the first two silently (the keeper's empty answers) ...
    assert run.reply(r_c).dispatches == [] and run.reply(r_a).dispatches == []
    assert run.failures == []
    # ... and answers the last.
    assert run.reply(r_b, out("A+B+C")).finals[0].message.payload == "A+B+C"


def test_late_lines_are_routed_as_tasks_and_as_the_final() -> None:
    """A stdin agent's answer ends at its first line; every line after it still counts."""
    run = Run(Engine(TEAM))
    turn1 = run.input("q").dispatches[0]
    (first,) = run.reply(turn1, out("x", "task", dest="w1", id="x")).dispatches
    (second,) = run.late(turn1, 1, out("y", "task", dest="w2", id="y")).dispatches
    assert second.message.id == "y" and second.stage == "w2"
    again = run.late(turn1, 1, out("y", "task", dest="w2", id="y"))  # a redelivered outcome
    assert again.dispatches == [] and again.records == []
    (r_x,) = run.reply(first, "X").dispatches
    assert r_x.message.metadata.get("reply") == "optional"
    assert run.reply(r_x).dispatches == []
    (r_y,) = run.reply(second, "Y").dispatches
    step = run.reply(r_y, out("thinking", "event"))  # a note: the flow keeps listening
    assert step.failure is None and step.finals == []
    step = run.late(r_y, 1, out("X and Y"))
    assert [f.message.payload for f in step.finals] == ["X and Y"]
    assert run.engine.quiescent(run.state) and "heard" not in run.state
    after = run.late(r_y, 2, out("an afterthought"))
    assert [r.kind for r in after.records] == ["output"] and after.finals == []


def test_late_lines_of_a_stage_nobody_listens_to_are_recorded_only() -> None:
    run = Run(Engine(hive("pipeline", stages("a", "b"))))
    first = run.input("q").dispatches[0]
    (second,) = run.reply(first, "one").dispatches
    step = run.late(first, 1, "two")
    assert [r.kind for r in step.records] == ["output"] and step.dispatches == []
    assert step.records[0].id == make_id(first.id, "out", 1)
    assert run.waiting() == [second]


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


def test_a_fan_out_of_fifty_is_one_round() -> None:
    run = Run(Engine(hive("hierarchical", stages("boss", "w1"), guardrails={"maxTurns": 1})))
    turn = run.input("q").dispatches[0]
    tasks = run.reply(turn, *(out(i, "task", dest="w1", id=f"t{i}") for i in range(50)))
    backs = [run.reply(t, i * 10).dispatches[0] for i, t in enumerate(tasks.dispatches)]
    for back in backs[:-1]:
        run.reply(back)
    step = run.reply(backs[-1], out("all back"))
    assert run.failures == [] and step.finals[0].message.payload == "all back"


def test_max_turns_bounds_the_rounds() -> None:
    run = Run(Engine(hive("hierarchical", stages("boss", "w1"), guardrails={"maxTurns": 2})))
    turn = run.input("loop").dispatches[0]
    task = run.reply(turn, out("again", "task", dest="w1")).dispatches[0]  # round 1
    back = run.reply(task, "r1").dispatches[0]
    task = run.reply(back, out("again", "task", dest="w1")).dispatches[0]  # round 2
    back = run.reply(task, "r2").dispatches[0]
    step = run.reply(back, out("again", "task", dest="w1"))  # round 3
    assert step.dispatches == []
    assert step.failure is not None and step.failure[0] == "MaxTurnsExceeded"
    assert "maxTurns is 2" in step.failure[1] and "round 3" in step.failure[1]
    assert run.engine.input_status(run.state, "in-1") == "failed"
    assert "heard" not in run.state


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


def test_seed_hierarchical_hive() -> None:
    run = Run(Engine(seed("06")))
    turn = run.input("q").dispatches[0]
    assert turn.stage == "supervisor"
    a, b = run.reply(
        turn, out(1, "task", dest="worker1"), out(2, "task", dest="worker2")
    ).dispatches
    (back_a,) = run.reply(a, 10).dispatches
    (back_b,) = run.reply(b, 20).dispatches
    assert [back_a.message.payload, back_b.message.payload] == [10, 20]
    assert run.reply(back_a).dispatches == []
    assert run.reply(back_b, out(30)).finals[0].message.payload == 30
