"""composed: segments chained like seed 09, each with its own pattern and stage names."""

from __future__ import annotations

from apiary.controllers.templates import hive_stages
from apiary.patterns import Engine, make_id

from .helpers import Run, out, seed

SEED09 = seed("09")


def test_stage_names_match_the_controllers() -> None:
    engine = Engine(SEED09)
    names = [stage.name for stage in hive_stages(SEED09)[0]]
    assert (
        engine.stages()
        == names
        == [
            "event-stage-subscriber1",
            "pipeline-stage-stage1",
            "pipeline-stage-stage2",
            "swarm-stage-agent1",
        ]
    )
    assert [s.pattern for s in engine.segments] == ["event-driven", "pipeline", "swarm"]


def test_three_segments_chain_to_one_final() -> None:
    run = Run(Engine(SEED09))
    step = run.input("raw", type="event")
    (event,) = step.dispatches
    assert event.stage == "event-stage-subscriber1"

    step = run.reply(event, out("cleaned"))
    # the event segment is quiescent: its final ([outputs]) is handed to the pipeline segment
    kinds = [r.kind for r in step.records]
    assert kinds == ["output", "event"]
    handoff = step.records[1]
    assert handoff.id == make_id("in-1", "#segment", 1)
    assert handoff.message.payload == [
        {"stage": "event-stage-subscriber1", "type": "event", "payload": "cleaned"}
    ]
    assert handoff.message.metadata["fromSegment"] == "event-stage"
    (stage1,) = step.dispatches
    assert stage1.stage == "pipeline-stage-stage1" and stage1.parent == handoff.id
    assert stage1.message.payload == handoff.message.payload

    stage2 = run.reply(stage1, "summarised").dispatches[0]
    assert stage2.stage == "pipeline-stage-stage2"
    step = run.reply(stage2, "polished")
    (agent,) = step.dispatches
    assert agent.stage == "swarm-stage-agent1" and agent.message.payload == "polished"
    assert step.records[-1].kind == "event" and step.finals == []

    (final,) = run.reply(agent, "approved").finals
    assert final.message.payload == [{"stage": "swarm-stage-agent1", "payload": "approved"}]
    assert final.message.correlation_id == "in-1"
    assert run.engine.quiescent(run.state)
    assert [r.kind for r in run.records].count("final") == 1


def test_failure_in_a_later_segment_fails_the_input() -> None:
    run = Run(Engine(SEED09))
    run.input("raw", type="event")
    stage1 = run.reply(run.one("event-stage-subscriber1"), "x").dispatches[0]
    step = run.reply(stage1, error=("CrashLoop", "agent exited 1"))
    assert step.failure == ("CrashLoop", "agent exited 1")
    assert run.engine.input_status(run.state, "in-1") == "failed"
    assert run.engine.quiescent(run.state)


def test_stragglers_of_a_finished_segment_are_recorded_only() -> None:
    hive = seed("09")
    swarm = hive["spec"]["patternSegments"][0]
    swarm["pattern"] = "swarm"
    swarm["config"] = {
        "agents": [{"name": "a", "agentRef": "e"}, {"name": "b", "agentRef": "e"}],
        "aggregation": "first",
    }
    run = Run(Engine(hive))
    run.input("q")
    step = run.reply(run.one("event-stage-a"), "fast")
    assert [d.stage for d in step.dispatches] == ["pipeline-stage-stage1"]
    late = run.reply(run.one("event-stage-b"), "slow")
    assert [r.kind for r in late.records] == ["output"] and late.dispatches == []
    assert run.engine.input_status(run.state, "in-1") == "active"
