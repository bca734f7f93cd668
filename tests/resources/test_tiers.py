"""Task tier maps: what a Cell (or the server) may say per tier, and how a tier resolves."""

from __future__ import annotations

from typing import Any

import pytest

from apiary.resources import ValidationFailed, admit
from apiary.resources.tiers import priority_rank, resolve_tier, tier_alias


def cell(tiers: Any) -> dict[str, Any]:
    return {"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": "c"},
            "spec": {"tiers": tiers}}  # fmt: skip


def test_a_cell_tier_map_is_validated_and_an_unknown_tier_is_a_warning() -> None:
    admitted = admit(cell({"simple": {"model": "gpt-4o-mini", "maxTokens": 500,
                                      "priority": "low"}, "premium": {"model": "o1"}}))  # fmt: skip
    assert admitted.object["spec"]["tiers"]["simple"]["maxTokens"] == 500
    assert admitted.warnings == ['unknown field "spec.tiers.premium"']
    with pytest.raises(ValidationFailed) as failed:
        admit(cell({"standard": {"priority": "urgent", "maxTokens": 0, "model": ""}}))
    fields = {field for field, _ in failed.value.details}
    assert fields == {"spec.tiers.standard.priority", "spec.tiers.standard.maxTokens",
                      "spec.tiers.standard.model"}  # fmt: skip


def test_resolution_is_field_by_field_cell_over_server_over_builtin() -> None:
    server = {"standard": {"model": "s-model", "maxTokens": 100, "priority": "high"}}
    assert resolve_tier("standard") == {"name": "standard", "priority": "normal"}
    assert resolve_tier("standard", {"standard": {"maxTokens": 7}}, server) == {
        "name": "standard", "priority": "high", "model": "s-model", "maxTokens": 7,
    }  # fmt: skip
    assert resolve_tier("complex")["priority"] == "high"  # type: ignore[index]
    assert resolve_tier("premium") is None


def test_priority_rank_and_aliases() -> None:
    assert priority_rank({"resolvedTier": {"name": "simple", "priority": "high"}}) == 0
    assert priority_rank({"taskTier": "simple"}) == 2  # made before tiers resolved: built-in
    assert priority_rank({}) == 1
    assert [tier_alias(m) for m in ("tier:simple", "standard", "gpt-4o", None, "tier:x")] == [
        "simple", "standard", None, None, "x",
    ]  # fmt: skip
