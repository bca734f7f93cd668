"""pipeline: order, payload hand-off, partial outputs, failures, duplicates, concurrency."""

from __future__ import annotations

import json

from apiary.patterns import Engine, make_id

from .helpers import Run, hive, out, seed, stages

THREE = hive("pipeline", stages("s1", "s2", "s3"))


def test_stages_run_in_order_and_hand_off_payloads() -> None:
    run = Run(Engine(THREE))
    step = run.input("x")
    (first,) = step.dispatches
    assert (first.stage, first.message.payload, first.parent) == ("s1", "x", "in-1")
    assert first.id == make_id("in-1", "s1", 0)
    assert first.message.correlation_id == "in-1" and first.message.session_id == "s1"
    assert first.message.dest_agent_id == "s1" and first.message.type == "task"

    second = run.reply(first, "x1").dispatches[0]
    (output,) = run.kinds("output")
    assert (second.stage, second.message.payload, second.parent) == ("s2", "x1", output.id)
    assert output.parent == first.id and output.stage == "s1"
    assert output.message.correlation_id == first.id

    third = run.reply(second, "x12").dispatches[0]
    assert (third.stage, third.message.payload) == ("s3", "x12")
    step = run.reply(third, {"answer": "x123"})
    assert step.dispatches == []
    (final,) = step.finals
    assert final.message.payload == {"answer": "x123"}
    assert final.message.correlation_id == "in-1" and final.parent == "in-1"
    assert final.message.type == "result" and final.stage is None
    assert final.id == make_id("in-1", "#final", 0)
    assert [r.kind for r in run.records] == ["output", "output", "output", "final"]
    assert run.engine.quiescent(run.state)
    assert run.engine.input_status(run.state, "in-1") == "completed"


def test_partial_outputs_are_recorded_not_forwarded() -> None:
    run = Run(Engine(THREE))
    first = run.input("x").dispatches[0]
    step = run.reply(first, out("thinking", more=True), out("x1"), out("surplus"))
    assert [r.message.payload for r in step.records] == ["thinking", "x1", "surplus"]
    (forwarded,) = step.dispatches
    assert forwarded.message.payload == "x1"
    assert forwarded.parent == step.records[1].id
    assert "more" not in forwarded.message.metadata


def test_only_partial_outputs_fail_the_flow() -> None:
    run = Run(Engine(THREE))
    first = run.input("x").dispatches[0]
    step = run.reply(first, out("a", more=True))
    assert step.failure is not None and step.failure[0] == "NoOutput"
    assert "s1" in step.failure[1]
    assert run.engine.input_status(run.state, "in-1") == "failed"


def test_error_outcome_fails_the_flow_and_closes_it() -> None:
    run = Run(Engine(THREE))
    first = run.input("x").dispatches[0]
    step = run.reply(first, error=("Timeout", "no answer in 30s"))
    assert step.failure == ("Timeout", "no answer in 30s")
    (error,) = step.records
    assert error.kind == "error" and error.stage == "s1" and error.parent == first.id
    assert error.message.type == "error"
    assert error.message.payload == {"reason": "Timeout", "message": "no answer in 30s"}
    assert error.message.correlation_id == "in-1"
    assert step.finals == [] and step.dispatches == []
    assert run.engine.quiescent(run.state)
    late = run.engine.on_outcome(run.state, first.id, "s1", [out("late")])
    assert (late.records, late.dispatches, late.failure) == ([], [], None)


def test_an_agent_error_message_fails_the_flow() -> None:
    run = Run(Engine(THREE))
    first = run.input("x").dispatches[0]
    step = run.reply(first, out({"detail": "model overloaded"}, "error"))
    assert step.failure is not None and step.failure[0] == "AgentError"
    assert "model overloaded" in step.failure[1]
    assert [r.kind for r in step.records] == ["output", "error"]


def test_duplicate_outcomes_and_inputs_do_nothing() -> None:
    run = Run(Engine(THREE))
    first = run.input("x").dispatches[0]
    before = json.dumps(run.state)
    again = run.input("x")
    assert (again.dispatches, again.records) == ([], [])
    assert json.dumps(run.state) == before
    run.reply(first, "x1")
    duplicate = run.engine.on_outcome(run.state, first.id, "s1", [out("x1")])
    assert (duplicate.dispatches, duplicate.records, duplicate.finals) == ([], [], [])
    unknown = run.engine.on_outcome(run.state, "nope", "s1", [out("x1")])
    assert (unknown.dispatches, unknown.records) == ([], [])


def test_reused_output_ids_are_made_unique() -> None:
    run = Run(Engine(THREE))
    first = run.input("x").dispatches[0]
    reused = [out("a", more=True, id=first.id), out("b", id=first.id)]
    step = run.reply(first, *reused)
    ids = [r.id for r in step.records]
    assert ids == [make_id(first.id, "out", 0), make_id(first.id, "out", 1)]
    assert reused[0].id == first.id  # the caller's messages are not touched


def test_concurrent_inputs_in_one_session() -> None:
    run = Run(Engine(hive("pipeline", stages("s1", "s2"))))
    a = run.input("a", id="in-a").dispatches[0]
    b = run.input("b", id="in-b").dispatches[0]
    b2 = run.reply(b, "b1").dispatches[0]
    a2 = run.reply(a, "a1").dispatches[0]
    assert not run.engine.quiescent(run.state)
    assert run.engine.open_dispatches(run.state) == [b2.id, a2.id]
    (fb,) = run.reply(b2, "b12").finals
    assert run.engine.input_status(run.state, "in-a") == "active"
    (fa,) = run.reply(a2, "a12").finals
    assert (fa.message.payload, fa.message.correlation_id) == ("a12", "in-a")
    assert (fb.message.payload, fb.message.correlation_id) == ("b12", "in-b")
    assert run.engine.quiescent(run.state)


def test_input_metadata_travels_but_per_message_keys_do_not() -> None:
    run = Run(Engine(THREE))
    first = run.input("x", user="ann", **{"token-count": "12"}).dispatches[0]
    assert first.message.metadata == {"user": "ann"}
    second = run.reply(first, out("y", metadata={"token-count": "5", "note": "n"})).dispatches[0]
    assert second.message.metadata == {"user": "ann"}


def test_seed_pipeline_hive() -> None:
    engine = Engine(seed("05"))
    assert engine.stages() == ["stage1", "stage2", "stage3"]
    run = Run(engine)
    dispatch = run.input("hello").dispatches[0]
    for stage in ("stage1", "stage2", "stage3"):
        assert dispatch.stage == stage
        step = run.reply(dispatch, f"{dispatch.message.payload}>{stage}")
        dispatch = step.dispatches[0] if step.dispatches else dispatch
    (final,) = run.finals
    assert final.message.payload == "hello>stage1>stage2>stage3"
