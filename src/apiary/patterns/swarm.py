"""swarm: every stage answers the same input; the answers are combined.

``aggregation``: ``all`` → a list of ``{"stage", "payload"}`` in stage order; ``first`` → the
first answer of the last round is final at once (later ones are still recorded); ``majority`` →
the payload most stages agree on (canonical JSON equality, ties to the answer whose first voter
comes first in stage order), with the tally in the final's metadata.

``rounds`` R > 1 is a debate: once every stage answered round r, each gets ``{"input": original
payload, "round": r + 1, "answers": [the OTHER stages' round-r answers]}``; the last round is
aggregated.
"""

from __future__ import annotations

import json
from typing import Any

from apiary.patterns.base import Pattern
from apiary.patterns.effects import Effects
from apiary.patterns.messages import Output, canonical, terminal
from apiary.waggle import Message


class Swarm(Pattern):
    def start(self, fx: Effects, st: dict[str, Any], message: Message, cause: str) -> None:
        st.update(round=1, input=message.payload, cause=cause, answers={})
        for stage in self.segment.stage_names():
            fx.dispatch(stage, cause, 1, message.payload, parent=cause)

    def outcome(
        self, fx: Effects, st: dict[str, Any], dispatch_id: str, stage: str, outputs: list[Output]
    ) -> None:
        answer = terminal(outputs)
        if answer is None:
            self.no_answer(fx, dispatch_id, stage)
            return
        record_id, message = answer
        st["answers"][stage] = message.payload
        last_round = st["round"] >= self.segment.rounds
        if last_round and self.segment.aggregation == "first":
            fx.finish(message.payload, record_id, {"aggregation": "first", "stage": stage})
            return
        names = self.segment.stage_names()
        if len(st["answers"]) < len(names):
            return
        if not last_round:
            self._next_round(fx, st, record_id)
        elif self.segment.aggregation == "majority":
            payload, metadata = majority(names, st["answers"])
            fx.finish(payload, record_id, metadata)
        else:
            answers = [{"stage": name, "payload": st["answers"][name]} for name in names]
            fx.finish(answers, record_id, {"aggregation": "all"})

    def _next_round(self, fx: Effects, st: dict[str, Any], parent: str) -> None:
        names = self.segment.stage_names()
        previous: dict[str, Any] = st["answers"]
        following = st["round"] + 1
        st.update(round=following, answers={})
        for stage in names:
            others = [{"stage": o, "payload": previous[o]} for o in names if o != stage]
            payload = {"input": st["input"], "round": following, "answers": others}
            fx.dispatch(stage, st["cause"], following, payload, parent=parent)


def majority(names: list[str], answers: dict[str, Any]) -> tuple[Any, dict[str, str]]:
    """The winning payload and metadata ``aggregation``, ``votes`` (the winner's), ``voters``,
    ``stages`` (who voted for it) and ``tally`` (JSON list of every distinct answer's count, in
    order of first appearance)."""
    groups: dict[str, list[str]] = {}
    for name in names:  # dicts keep insertion order: groups are in order of first voter
        groups.setdefault(canonical(answers[name]), []).append(name)
    best = max(groups.values(), key=len)  # max keeps the first of equals: ties go to stage order
    metadata = {
        "aggregation": "majority",
        "votes": str(len(best)),
        "voters": str(len(names)),
        "stages": ",".join(best),
        "tally": json.dumps([len(group) for group in groups.values()]),
    }
    return answers[best[0]], metadata
