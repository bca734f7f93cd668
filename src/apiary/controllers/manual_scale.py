"""A manual scale of a stage (``PUT …/scale``, ``apiaryctl scale``) as the autoscaler sees it.

For an autoscaled stage the count is clamped to the stage's ``minReplicas..maxReplicas`` and
written into the autoscaler's annotation as the count it carries on from, with
``lastScaleManual`` so that its cooldown counts the change (Kubernetes: ``kubectl scale`` with an
HPA). Without ``scaling`` the annotation entry is dropped and the spec alone decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from apiary.controllers.autoscaler import ScalingPolicy, read_history
from apiary.controllers.meta import Obj, rfc3339
from apiary.controllers.templates import Stage, set_autoscaler_notes


@dataclass(frozen=True)
class ManualScale:
    """What a manual scale of one stage came to."""

    requested: int
    replicas: int
    """What the stage runs now: ``requested``, clamped when the stage is autoscaled."""
    policy: ScalingPolicy | None = None
    """The stage's scaling when it is autoscaled."""

    @property
    def clamped(self) -> bool:
        return self.replicas != self.requested

    def message(self) -> str | None:
        """What to tell the caller beyond "scaled to N" (None when the stage is not autoscaled):
        the bounds, and what was asked for when it was clamped."""
        if self.policy is None:
            return None
        low, high = self.policy.min_replicas, self.policy.max_replicas
        note = f"autoscaled {low}..{high}: the autoscaler carries on from {self.replicas}"
        if not self.clamped:
            return note
        side = f"maxReplicas {high}" if self.requested > high else f"minReplicas {low}"
        return f"asked for {self.requested}, clamped to {side}; {note}"


def manual_scale(
    hive: Obj, stage: Stage, agentspec: Obj | None, requested: int, now: datetime
) -> ManualScale:
    """Make ``requested`` replicas of ``stage`` take effect in ``hive`` (a copy about to be
    written; changed in place): an autoscaled stage gets its count clamped and recorded in the
    annotation as where the autoscaler carries on from (with ``lastScaleManual`` for the
    cooldown); any other stage loses its annotation entry, so the spec alone decides. The caller
    writes the returned ``replicas`` into the stage's spec."""
    notes = read_history(hive)
    policy = ScalingPolicy.of(agentspec) if agentspec is not None else None
    if policy is None:
        if notes.pop(stage.name, None) is not None:
            set_autoscaler_notes(hive, notes)
        return ManualScale(requested, requested)
    result = ManualScale(requested, policy.clamp(requested), policy)
    stamp = rfc3339(now)
    entry = dict(notes.get(stage.name) or {})
    entry.update(
        replicas=result.replicas,
        specReplicas=result.replicas,
        previous=stage.replicas,
        direction="manual",
        reason=f"scaled by hand to {requested}"
        + (f", clamped to {result.replicas}" if result.clamped else ""),
        time=stamp,
        lastScaleManual=stamp,
    )
    notes[stage.name] = entry
    set_autoscaler_notes(hive, notes)
    return result
