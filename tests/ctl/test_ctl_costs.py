"""``apiaryctl session transcript`` and ``session replay`` show each hop's estimated cost beside
its tokens (the transcript's ``costUsd``), ``-`` where nothing was priced."""

from __future__ import annotations

from typing import Any

from apiary.ctl.commands.replay import diff_rows
from apiary.ctl.commands.session import transcript_rows, usd


def hop(stage: str, payload: Any, tokens: int, cost: float | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"seq": 1, "kind": "output", "stage": stage, "drone": "d", "latencyMs": 2.0,
                         "usage": {"promptTokens": tokens, "completionTokens": 0},
                         "message": {"payload": payload}}  # fmt: skip
    if cost is not None:
        e["costUsd"] = cost
    return e


def test_usd_is_written_to_the_millionth_and_dash_when_unpriced() -> None:
    assert [usd(v) for v in (0.02, 0.0182, 1.5, 0.000022, 3e-9, 0, None, True)] == [
        "$0.02", "$0.0182", "$1.5", "$0.000022", "<$0.000001", "-", "-", "-",
    ]  # fmt: skip


def test_the_transcript_table_has_a_cost_column() -> None:
    rows = transcript_rows([hop("a", "x", 15, 0.02), hop("b", "y", 7)])
    assert [r[5:7] for r in rows] == [["15", "$0.02"], ["7", "-"]]


def test_the_replay_diff_sums_cost_per_stage_before_and_after() -> None:
    before = [hop("a", "x", 15, 0.02), hop("a", "x2", 15, 0.02), hop("b", "y", 15, 0.02)]
    after = [hop("a", "x", 0), hop("a", "x2", 0), hop("b", "z", 15, 0.03)]
    assert diff_rows(before, after) == [
        ("a", "same", 30, 0, 0.04, 0.0),
        ("b", "changed", 15, 15, 0.02, 0.03),
    ]
