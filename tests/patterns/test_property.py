"""Property: however outcomes interleave and repeat, each input gets exactly one final."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from apiary.patterns import Dispatch, Engine

from .helpers import Run, hive, out, stages

PIPELINE = Engine(hive("pipeline", stages("s1", "s2", "s3")))


@settings(max_examples=150, deadline=None)
@given(
    inputs=st.integers(min_value=1, max_value=4),
    choices=st.lists(st.integers(min_value=0, max_value=1000), min_size=40, max_size=40),
    redeliver=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_random_interleavings_give_one_final_per_input(
    inputs: int, choices: list[int], redeliver: list[bool]
) -> None:
    run = Run(PIPELINE)
    ids = [f"in-{i}" for i in range(inputs)]
    for input_id in ids:
        run.input(input_id, id=input_id)
    answered: list[Dispatch] = []
    for choice, again in zip(choices, redeliver, strict=True):
        candidates = sorted(run.waiting(), key=lambda d: d.id)
        if again and answered:  # an at-least-once duplicate of an earlier outcome
            dispatch = answered[choice % len(answered)]
            step = run.engine.on_outcome(run.state, dispatch.id, dispatch.stage, [out("dup")])
            assert step.records == [] and step.dispatches == [] and step.finals == []
            continue
        if not candidates:
            break
        dispatch = candidates[choice % len(candidates)]
        answered.append(dispatch)
        run.reply(dispatch, out(f"{dispatch.message.payload}>{dispatch.stage}"))
    while run.waiting():  # finish whatever the random prefix left open
        run.reply(run.waiting()[0], out("tail"))
    finals = run.finals
    assert sorted(f.message.correlation_id or "" for f in finals) == sorted(ids)
    assert len({f.id for f in finals}) == len(finals)
    assert run.engine.quiescent(run.state)
    assert len({r.id for r in run.records}) == len(run.records)
