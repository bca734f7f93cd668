"""Drive an Engine the way the router will: state through JSON between every step, outcomes
made up by the test instead of by agents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from apiary.patterns import Dispatch, Engine, Record, Step
from apiary.resources import admit
from apiary.waggle import Message

SEEDS = Path(__file__).resolve().parents[2] / "examples" / "seed-manifests"
T0 = "2024-05-01T12:00:00.000Z"


def seed(prefix: str) -> dict[str, Any]:
    """A seed manifest, admitted (as the API stores it)."""
    (path,) = SEEDS.glob(f"{prefix}*.yaml")
    return admit(yaml.safe_load(path.read_text())).object


def hive(
    pattern: str | None, stages: list[dict[str, Any]] | None = None, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"pattern": pattern, "stages": stages, **spec}
    obj = {
        "apiVersion": "apiary.io/v1",
        "kind": "Hive",
        "metadata": {"name": "h", "namespace": "default"},
        "spec": {k: v for k, v in body.items() if v is not None},
    }
    return admit(obj).object


def stages(*names: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": n, "agentRef": "echo", **extra} for n in names]


def out(
    payload: Any,
    type: str = "result",
    *,
    more: bool = False,
    dest: str | None = None,
    stage: str | None = None,
    metadata: dict[str, str] | None = None,
    id: str | None = None,
) -> Message:
    """An agent output; fixed id and timestamp so that runs are reproducible."""
    md = dict(metadata or {})
    if more:
        md["more"] = "true"
    if stage is not None:
        md["stage"] = stage
    return Message(
        payload, type, id=id or "agent-out", metadata=md, timestamp=T0, dest_agent_id=dest
    )


class Run:
    """One session: the state (JSON round-tripped), every record, and the dispatches still open."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.state: dict[str, Any] = {}
        self.records: list[Record] = []
        self.dispatched: list[Dispatch] = []
        self.open: dict[str, Dispatch] = {}
        self.failures: list[tuple[str, str]] = []

    def _apply(self, step: Step) -> Step:
        text = json.dumps(step.state)  # the journal stores the state as JSON: it must survive
        self.state = json.loads(text)
        for message in [*(r.message for r in step.records), *(d.message for d in step.dispatches)]:
            json.dumps(message.to_dict())
        assert [r for r in step.records if r.kind == "final"] == step.finals
        for dispatch in step.dispatches:  # only a supervisor's task keeps the agent's own id
            assert dispatch.message.id == dispatch.id or dispatch.message.source_agent_id
            self.open[dispatch.id] = dispatch
            self.dispatched.append(dispatch)
        for closed in set(self.open) - set(self.state["open"]):
            del self.open[closed]
        assert set(self.open) == set(self.state["open"])
        self.records.extend(step.records)
        if step.failure is not None:
            self.failures.append(step.failure)
        return step

    def input(self, payload: Any, id: str = "in-1", type: str = "task", **metadata: str) -> Step:
        message = Message(payload, type, id=id, metadata=metadata, timestamp=T0, session_id="s1")
        return self._apply(self.engine.on_input(self.state, message))

    def reply(
        self,
        dispatch: Dispatch | str,
        *outputs: Message | Any,
        error: tuple[str, str] | None = None,
    ) -> Step:
        did = dispatch if isinstance(dispatch, str) else dispatch.id
        stage = self.open[did].stage if did in self.open else "?"
        messages = [o if isinstance(o, Message) else out(o) for o in outputs]
        return self._apply(self.engine.on_outcome(self.state, did, stage, messages, error))

    def late(self, dispatch: Dispatch | str, offset: int, *outputs: Message | Any) -> Step:
        """Lines the agent printed for ``dispatch`` after its answer (outputs ``offset``…)."""
        did = dispatch if isinstance(dispatch, str) else dispatch.id
        stage = dispatch.stage if isinstance(dispatch, Dispatch) else "?"
        messages = [o if isinstance(o, Message) else out(o) for o in outputs]
        return self._apply(self.engine.on_late(self.state, did, stage, offset, messages))

    def waiting(self, stage: str | None = None) -> list[Dispatch]:
        return [d for d in self.open.values() if stage is None or d.stage == stage]

    def one(self, stage: str) -> Dispatch:
        (dispatch,) = self.waiting(stage)
        return dispatch

    def kinds(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.kind == kind]

    @property
    def finals(self) -> list[Record]:
        return self.kinds("final")
