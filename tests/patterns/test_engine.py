"""Engine-wide promises: deterministic ids, JSON state, bad input named clearly."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest

from apiary.errors import Invalid
from apiary.patterns import Engine, initial_state, make_id
from apiary.patterns.state import DONE_LIMIT

from .helpers import Run, hive, out, seed, stages


def test_make_id_is_the_documented_sha1() -> None:
    expected = hashlib.sha1(b"cause|stage1|2").hexdigest()[:20]
    assert make_id("cause", "stage1", 2) == expected and len(expected) == 20


def script(run: Run) -> None:
    """The same conversation, step by step, on any hive of seed 09's shape."""
    run.input("one", id="a", type="event")
    run.input("two", id="b", type="event")
    for _ in range(20):
        waiting = sorted(run.waiting(), key=lambda d: (d.stage, d.id))
        if not waiting:
            return
        dispatch = waiting[0]
        run.reply(dispatch, out(f"{dispatch.stage}:{dispatch.message.payload}"))


def test_same_sequence_gives_identical_states_and_ids() -> None:
    first, second = Run(Engine(seed("09"))), Run(Engine(seed("09")))
    script(first)
    script(second)
    assert len(first.finals) == 2
    assert json.dumps(first.state) == json.dumps(second.state)
    dump = [(r.id, r.kind, r.message.to_dict()) for r in first.records]
    assert dump == [(r.id, r.kind, r.message.to_dict()) for r in second.records]
    assert [d.id for d in first.dispatched] == [d.id for d in second.dispatched]


def test_a_step_does_not_mutate_the_state_it_was_given() -> None:
    engine = Engine(hive("hierarchical", stages("boss", "w1")))
    run = Run(engine)
    turn = run.input("q").dispatches[0]
    before = copy.deepcopy(run.state)
    one = engine.on_outcome(run.state, turn.id, "boss", [out("t", "task", dest="w1")])
    assert run.state == before
    two = engine.on_outcome(run.state, turn.id, "boss", [out("t", "task", dest="w1")])
    assert one.state == two.state and [d.id for d in one.dispatches] == [
        d.id for d in two.dispatches
    ]


def test_empty_state_is_a_new_session() -> None:
    engine = Engine(hive("pipeline", stages("s")))
    assert engine.quiescent({}) and engine.open_dispatches(initial_state()) == []
    assert engine.input_status({}, "x") is None


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ([1], "JSON object"),
        ({"version": 9, "flows": {}}, "version must be 1"),
        ({"version": 1, "flows": [], "open": {}, "done": {}}, "flows must be an object"),
    ],
)
def test_a_foreign_state_document_is_refused_by_name(state: object, words: str) -> None:
    engine = Engine(hive("pipeline", stages("s")))
    with pytest.raises(ValueError, match=words):
        engine.quiescent(state)  # type: ignore[arg-type]


def test_outputs_must_be_messages() -> None:
    run = Run(Engine(hive("pipeline", stages("s"))))
    dispatch = run.input("q").dispatches[0]
    with pytest.raises(TypeError, match=r"outputs\[0\]"):
        run.engine.on_outcome(run.state, dispatch.id, "s", ["plain"])  # type: ignore[list-item]


def test_unroutable_hives_name_the_field() -> None:
    bad = {"kind": "Hive", "metadata": {"name": "h"}, "spec": {"pattern": "pipeline"}}
    with pytest.raises(Invalid) as caught:
        Engine(bad)
    assert [d.field for d in caught.value.details] == ["spec.stages"]

    bad["spec"] = {
        "pattern": "swarm",
        "stages": [{"name": "a", "agentRef": "x"}, {"agentRef": "y"}],
        "swarm": {"aggregation": "loudest", "rounds": 0},
    }
    with pytest.raises(Invalid) as caught:
        Engine(bad)
    fields = {d.field for d in caught.value.details}
    assert fields == {"spec.stages[1].name", "spec.swarm.aggregation", "spec.swarm.rounds"}

    with pytest.raises(Invalid) as caught:
        Engine({"spec": None})
    assert caught.value.details[0].field == "spec"

    filters = {
        "pattern": "event-driven",
        "stages": [{"name": "a", "agentRef": "x", "filter": {"type": 3, "metadata": {"k": 1}}}],
    }
    with pytest.raises(Invalid) as caught:
        Engine({"spec": filters})
    assert {d.field for d in caught.value.details} == {
        "spec.stages[0].filter.type",
        "spec.stages[0].filter.metadata.k",
    }


def test_every_seed_hive_builds_an_engine() -> None:
    for prefix in ("05", "06", "07", "08", "09"):
        assert Engine(seed(prefix)).stages()


def test_the_state_remembers_only_recent_ended_inputs() -> None:
    run = Run(Engine(hive("pipeline", stages("s"))))
    for i in range(300):
        run.reply(run.input(i, id=f"in-{i}").dispatches[0], i)
    assert len(run.state["done"]) == DONE_LIMIT == 64
    assert run.engine.input_status(run.state, "in-299") == "completed"
    assert run.engine.input_status(run.state, "in-0") is None
    assert len(run.finals) == 300


def test_cancel_ends_every_flow_and_answers_every_open_dispatch() -> None:
    engine = Engine(hive("pipeline", stages("a", "b")))
    run = Run(engine)
    first = run.input("q").dispatches[0]
    run.input("r", id="in-2")
    step = engine.cancel(run.state, "Cancelled", "the session was closed")
    errors = [(r.kind, r.parent, r.message.payload["reason"]) for r in step.records]
    opened = sorted(run.state["open"])
    assert sorted(e[1] for e in errors) == sorted([*opened, "in-1", "in-2"])
    assert {e[0] for e in errors} == {"error"} and {e[2] for e in errors} == {"Cancelled"}
    assert step.dispatches == [] and step.failure == ("Cancelled", "the session was closed")
    assert engine.quiescent(step.state)
    assert engine.input_status(step.state, "in-1") == "failed"
    assert engine.on_outcome(step.state, first.id, "a", [out("late")]).records == []
    assert engine.cancel(step.state, "Cancelled", "again").records == []
