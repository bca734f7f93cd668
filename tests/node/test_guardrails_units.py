"""The guardrail chain's pieces with a hand-driven clock: rate bucket, per-minute token window,
circuit breaker, output schema and per-request budget — each allowed and blocked."""

from __future__ import annotations

from typing import Any

import pytest

from apiary.node.circuit import CLOSED, HALF_OPEN, OPEN, TRIAL_BUSY_DELAY, CircuitBreaker, State
from apiary.node.guardrails import GuardrailChain, GuardrailError, circuit_status
from apiary.node.ratelimit import TokenBucket, TokenWindow
from apiary.waggle import Message, Usage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def out(payload: Any, tokens: int = 0, **meta: str) -> Message:
    msg = Message(payload, "result", metadata=dict(meta))
    if tokens:
        msg.usage = Usage(tokens // 2, tokens - tokens // 2)
    return msg


# ------------------------------------------------------------------------------ rate bucket


def test_bucket_allows_its_rate_and_says_exactly_how_long_to_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(60, clock=clock)  # one a second, burst of one
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(1.0)
    clock.now += 0.25
    assert bucket.take() == pytest.approx(0.75)  # a refused take takes nothing
    clock.now += 0.75
    assert bucket.take() == 0.0


def test_bucket_burst_is_one_second_of_rate_and_a_token_can_be_given_back() -> None:
    clock = Clock()
    bucket = TokenBucket(150, clock=clock)  # 2.5/s → burst 3
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.4)
    bucket.give_back()
    assert bucket.take() == 0.0
    clock.now += 60
    taken = sum(1 for _ in range(400) if bucket.take() == 0.0)
    assert taken == 3  # idle time never banks more than the burst


# ----------------------------------------------------------------------- per-minute tokens


def test_token_window_has_room_until_the_budget_then_waits_for_the_oldest_to_expire() -> None:
    clock = Clock()
    window = TokenWindow(100, clock=clock)
    window.add(60)
    assert window.wait() == 0.0
    clock.now += 10
    window.add(50)  # 110 in the window: full
    assert window.wait() == pytest.approx(50.0)  # the 60 leave at t+60
    clock.now += 50
    assert window.wait() == 0.0 and window.used == 50
    clock.now += 10
    assert window.wait() == 0.0 and window.used == 0


# -------------------------------------------------------------------------- circuit breaker


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    seen: list[State] = []
    breaker = CircuitBreaker(threshold=3, cooldown=10, clock=clock, on_change=seen.append)
    breaker.failure()
    breaker.failure()
    breaker.success()  # resets the count
    breaker.failure()
    breaker.failure()
    assert breaker.state == CLOSED and breaker.admit() == 0.0
    breaker.failure()
    assert breaker.state == OPEN and seen == [OPEN]
    assert breaker.admit() == pytest.approx(10.0)
    clock.now += 4
    assert breaker.admit() == pytest.approx(6.0)
    breaker.failure()  # a late failure does not extend the cooldown
    assert breaker.remaining() == pytest.approx(6.0)


def test_breaker_half_open_takes_exactly_one_trial_and_closes_on_success() -> None:
    clock = Clock()
    seen: list[State] = []
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock, on_change=seen.append)
    breaker.failure()
    clock.now += 5
    assert breaker.admit() == 0.0 and breaker.state == HALF_OPEN
    assert breaker.admit() == TRIAL_BUSY_DELAY  # only one trial at a time
    breaker.success()
    assert breaker.state == CLOSED and seen == [OPEN, HALF_OPEN, CLOSED]
    assert breaker.admit() == 0.0 and breaker.admit() == 0.0


def test_breaker_half_open_failure_reopens_for_another_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, cooldown=5, trials=2, clock=clock)
    breaker.failure()
    breaker.failure()
    clock.now += 5
    assert breaker.poll() == HALF_OPEN
    assert breaker.admit() == 0.0 and breaker.admit() == 0.0
    breaker.success()
    assert breaker.state == HALF_OPEN  # needs both trials
    breaker.failure()
    assert breaker.state == OPEN and breaker.opens == 2
    assert breaker.admit() == pytest.approx(5.0)


def test_breaker_releases_a_trial_slot_that_was_not_used() -> None:
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=1, clock=clock)
    breaker.failure()
    clock.now += 1
    assert breaker.admit() == 0.0
    breaker.release()
    assert breaker.admit() == 0.0


# ----------------------------------------------------------------------------- the chain


def test_no_drone_side_guardrails_means_no_chain() -> None:
    assert GuardrailChain.build(None) is None
    assert GuardrailChain.build({}) is None
    assert GuardrailChain.build({"responseTimeoutSeconds": 5, "maxTurns": 3}) is None
    assert GuardrailChain.build({"circuitBreaker": {"enabled": False}}) is None
    assert GuardrailChain.build({"rateLimitPerMinute": 10}) is not None


def test_bad_guardrails_name_the_field() -> None:
    with pytest.raises(GuardrailError, match=r"spec\.guardrails\.rateLimitPerMinute"):
        GuardrailChain.build({"rateLimitPerMinute": "lots"})
    with pytest.raises(GuardrailError, match=r"spec\.guardrails\.outputSchema"):
        GuardrailChain.build({"outputSchema": {"type": "no-such-type"}})
    with pytest.raises(GuardrailError, match=r"circuitBreaker\.failureThreshold"):
        GuardrailChain.build({"circuitBreaker": {"failureThreshold": 0}})


SEED_04_SCHEMA = {
    "type": "object",
    "properties": {"response": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["response"],
}


def test_output_schema_allows_a_conforming_payload_and_names_the_path_of_a_violation() -> None:
    chain = GuardrailChain.build({"outputSchema": SEED_04_SCHEMA})
    assert chain is not None
    assert chain.check([out({"response": "hi", "confidence": 0.5})]) is None
    assert chain.check([out({"response": "hi", "confidence": "high"})]) == (
        "OutputSchemaViolation",
        "payload.confidence: 'high' is not of type 'number'",
    )
    reason, text = chain.check([out("just text")]) or ("", "")
    assert (reason, text) == (
        "OutputSchemaViolation",
        "payload: 'just text' is not of type 'object'",
    )
    assert chain.stats.schema_violations == 2


def test_output_schema_checks_terminal_outputs_only() -> None:
    chain = GuardrailChain.build({"outputSchema": SEED_04_SCHEMA})
    assert chain is not None
    partial = out("thinking...", more="true")
    error = Message({"message": "boom"}, "error")
    assert chain.check([partial, out({"response": "done"})]) is None
    assert chain.check([error]) is None  # an error answer is the router's AgentError already
    problem = chain.check([partial, out({"confidence": 1})])
    assert problem == ("OutputSchemaViolation",
                       "outputs[1].payload: 'response' is a required property")  # fmt: skip


def test_output_schema_judges_answers_not_messages_to_other_agents() -> None:
    """A hierarchical supervisor's tasks and its event notes are not its answer (seed 06 gives
    the supervisor seat to llm-agent, whose outputSchema describes its answers)."""
    chain = GuardrailChain.build({"outputSchema": SEED_04_SCHEMA})
    assert chain is not None
    task = Message("plan a trip", "task", dest_agent_id="worker1")
    note = Message("waiting for workers", "event")
    assert chain.check([task]) is None
    assert chain.check([note]) is None
    assert chain.check([Message("not an object", "result")]) is not None


def test_output_schema_of_another_draft_is_honoured() -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array",
              "items": [{"type": "integer"}], "additionalItems": False}  # fmt: skip
    chain = GuardrailChain.build({"outputSchema": schema})
    assert chain is not None
    assert chain.check([out([1])]) is None
    assert chain.check([out([1, 2])]) is not None


def test_per_request_budget_counts_outputs_and_gateway_tokens() -> None:
    chain = GuardrailChain.build({"tokenBudgetPerRequest": 100})
    assert chain is not None
    assert chain.check([out("a", tokens=60), out("b", tokens=40)]) is None  # exactly the budget
    assert chain.check([out("a", tokens=60)], gateway=(30, 20)) == (
        "TokenBudgetExceeded",
        "the answer used 110 tokens, over tokenBudgetPerRequest 100",
    )
    chain.settle(("TokenBudgetExceeded", "x"))  # no breaker: nothing to count


def test_chain_per_minute_budget_blocks_admission_until_the_window_has_room() -> None:
    clock = Clock()
    chain = GuardrailChain.build({"tokenBudgetPerMinute": 100}, clock=clock)
    assert chain is not None
    assert chain.admit() == 0.0
    assert chain.check([out("a", tokens=70)]) is None
    assert chain.admit() == 0.0
    clock.now += 30
    assert chain.check([out("b", tokens=40)]) is None  # the answer is never cut off
    assert chain.admit() == pytest.approx(30.0)
    clock.now += 30
    assert chain.admit() == 0.0
    assert chain.stats.budget_waits == 1


def test_chain_rate_limit_and_breaker_compose_without_leaking_tokens_or_trials() -> None:
    clock = Clock()
    chain = GuardrailChain.build(
        {"rateLimitPerMinute": 60,
         "circuitBreaker": {"failureThreshold": 1, "resetTimeoutSeconds": 2}},
        clock=clock,
    )  # fmt: skip
    assert chain is not None and chain.circuit == CLOSED
    assert chain.admit() == 0.0
    chain.settle(("ResponseTimeout", "slow"))
    assert chain.circuit == OPEN
    assert chain.admit() == pytest.approx(2.0)  # the breaker answers first: no token taken
    clock.now += 2
    assert chain.admit() == 0.0 and chain.circuit == HALF_OPEN  # token refilled meanwhile
    chain.cancel()  # the trial was already answered elsewhere: slot and token come back
    assert chain.admit() == 0.0
    chain.settle(None, [out("fine")])
    assert chain.circuit == CLOSED
    assert chain.admit() == pytest.approx(1.0)  # rate-limited, and the breaker is untouched
    assert chain.stats.as_dict()["rateLimited"] == 1


def test_answer_of_type_error_counts_as_a_failure_but_a_budget_stop_does_not() -> None:
    chain = GuardrailChain.build({"circuitBreaker": {"failureThreshold": 2}})
    assert chain is not None
    chain.settle(None, [Message({"message": "boom"}, "error")])
    chain.settle(("TokenBudgetExceeded", "big"))  # a success for the breaker: resets
    chain.settle(None, [Message({"message": "boom"}, "error")])
    assert chain.circuit == CLOSED
    chain.crashed()
    assert chain.circuit == OPEN and chain.stats.circuit_opens == 1


def test_circuit_status_shows_not_ready_with_the_reason() -> None:
    clock = Clock()
    chain = GuardrailChain.build(
        {"circuitBreaker": {"failureThreshold": 1, "resetTimeoutSeconds": 10}}, clock=clock
    )
    assert chain is not None
    running = {"phase": "Running", "ready": True, "pid": 42}
    assert circuit_status(running, chain) == running
    chain.crashed()
    shown = circuit_status(running, chain)
    assert shown["ready"] is False and shown["reason"] == "CircuitOpen"
    assert shown["phase"] == "Running" and shown["pid"] == 42
    assert "1 consecutive failed attempts" in shown["message"]
    clock.now += 10
    chain.admit()
    assert circuit_status(running, chain)["reason"] == "CircuitHalfOpen"
    restarting = {"phase": "Starting", "ready": False}
    assert circuit_status(restarting, chain) == restarting  # its own reason wins
