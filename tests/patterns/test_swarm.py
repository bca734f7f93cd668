"""swarm: all / first / majority aggregation and debate rounds."""

from __future__ import annotations

import json

from apiary.patterns import Engine

from .helpers import Run, hive, seed, stages


def swarm(aggregation: str = "all", rounds: int = 1, n: int = 3) -> Engine:
    names = [f"a{i}" for i in range(1, n + 1)]
    settings = {"aggregation": aggregation, "rounds": rounds}
    return Engine(hive("swarm", stages(*names), swarm=settings))


def test_every_agent_gets_the_input_and_all_collects_in_stage_order() -> None:
    run = Run(swarm())
    step = run.input({"q": 1})
    assert [d.stage for d in step.dispatches] == ["a1", "a2", "a3"]
    assert all(d.message.payload == {"q": 1} and d.parent == "in-1" for d in step.dispatches)
    assert run.reply(run.one("a3"), "three").finals == []
    assert run.reply(run.one("a1"), "one").finals == []
    (final,) = run.reply(run.one("a2"), "two").finals
    assert final.message.payload == [
        {"stage": "a1", "payload": "one"},
        {"stage": "a2", "payload": "two"},
        {"stage": "a3", "payload": "three"},
    ]
    assert final.message.metadata == {"aggregation": "all"}


def test_first_answer_is_final_and_later_ones_are_recorded() -> None:
    run = Run(swarm("first"))
    run.input("q")
    (final,) = run.reply(run.one("a2"), "fast").finals
    assert final.message.payload == "fast" and final.message.metadata["stage"] == "a2"
    assert run.engine.input_status(run.state, "in-1") == "completed"
    assert not run.engine.quiescent(run.state)  # the slower agents are still working
    for stage in ("a3", "a1"):
        late = run.reply(run.one(stage), "slow")
        assert [r.kind for r in late.records] == ["output"] and late.finals == []
    assert run.engine.quiescent(run.state)
    assert len(run.finals) == 1


def test_majority_outvotes_the_wrong_agent() -> None:
    run = Run(swarm("majority"))
    run.input("2+2?")
    run.reply(run.one("a1"), {"answer": 4, "unit": "none"})
    run.reply(run.one("a2"), {"answer": 5, "unit": "none"})
    (final,) = run.reply(run.one("a3"), {"unit": "none", "answer": 4}).finals  # key order differs
    assert final.message.payload == {"answer": 4, "unit": "none"}
    md = final.message.metadata
    assert (md["votes"], md["voters"], md["stages"]) == ("2", "3", "a1,a3")
    assert json.loads(md["tally"]) == [2, 1]


def test_majority_ties_go_to_stage_order() -> None:
    run = Run(swarm("majority", n=4))
    run.input("q")
    for stage, answer in (("a4", "x"), ("a3", "y"), ("a2", "x"), ("a1", "y")):
        run.reply(run.one(stage), answer)
    (final,) = run.finals
    assert final.message.payload == "y"  # a1 voted y; a1 comes first
    assert final.message.metadata["stages"] == "a1,a3"

    run = Run(swarm("majority"))
    run.input("q")
    for stage, answer in (("a3", "z"), ("a2", "y"), ("a1", "x")):
        run.reply(run.one(stage), answer)
    assert run.finals[0].message.payload == "x"


def test_two_rounds_show_each_agent_the_others_answers() -> None:
    run = Run(swarm("majority", rounds=2))
    run.input("guess")
    for stage, answer in (("a1", "red"), ("a2", "blue"), ("a3", "red")):
        assert run.reply(run.one(stage), answer).finals == []
    second = {d.stage: d for d in run.waiting()}
    assert set(second) == {"a1", "a2", "a3"}
    assert second["a2"].message.payload == {
        "input": "guess",
        "round": 2,
        "answers": [{"stage": "a1", "payload": "red"}, {"stage": "a3", "payload": "red"}],
    }
    assert second["a1"].message.payload["answers"] == [
        {"stage": "a2", "payload": "blue"},
        {"stage": "a3", "payload": "red"},
    ]
    run.reply(second["a2"], "red")
    run.reply(second["a1"], "red")
    (final,) = run.reply(second["a3"], "red").finals
    assert final.message.payload == "red" and final.message.metadata["votes"] == "3"


def test_first_with_rounds_waits_for_the_last_round() -> None:
    run = Run(swarm("first", rounds=2, n=2))
    run.input("q")
    assert run.reply(run.one("a1"), "r1").finals == []
    run.reply(run.one("a2"), "r1")
    (final,) = run.reply(run.one("a2"), "r2").finals
    assert final.message.payload == "r2"


def test_seed_swarm_hive() -> None:
    run = Run(Engine(seed("07")))
    assert [d.stage for d in run.input("q").dispatches] == ["agent1", "agent2", "agent3"]
    for stage in ("agent1", "agent2", "agent3"):
        run.reply(run.one(stage), stage.upper())
    assert [a["payload"] for a in run.finals[0].message.payload] == ["AGENT1", "AGENT2", "AGENT3"]
