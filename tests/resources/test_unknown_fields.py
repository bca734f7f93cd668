"""Unknown fields: warnings by default, errors when strict, and never dropped."""

from __future__ import annotations

from apiary.resources import admit

from .helpers import agentspec, errors_of, hive, obj, seed


def test_unknown_fields_at_any_depth_warn_and_are_kept() -> None:
    body = seed("09")
    body["spec"]["patternSegments"][1]["config"]["stages"][0]["foo"] = {"nested": [1, None]}
    body["spec"]["guardrails"]["maxTokns"] = 5
    body["spec"]["futureFeature"] = None
    body["metadata"]["labelz"] = {"a": "b"}
    body["extraTop"] = 1
    admission = admit(body)
    assert sorted(admission.warnings) == sorted(
        [
            'unknown field "spec.patternSegments[1].config.stages[0].foo"',
            'unknown field "spec.guardrails.maxTokns"',
            'unknown field "spec.futureFeature"',
            'unknown field "metadata.labelz"',
            'unknown field "extraTop"',
        ]
    )
    out = admission.object
    assert out["spec"]["patternSegments"][1]["config"]["stages"][0]["foo"] == {"nested": [1, None]}
    assert out["spec"]["guardrails"]["maxTokns"] == 5
    assert "futureFeature" in out["spec"] and out["spec"]["futureFeature"] is None
    assert out["metadata"]["labelz"] == {"a": "b"}
    assert out["extraTop"] == 1


def test_strict_turns_unknown_fields_into_errors_with_other_problems() -> None:
    body = agentspec(interface={"type": "stdin", "formatt": "text"}, replicas="3")
    errors = errors_of(body, strict=True)
    assert errors["spec.interface.formatt"] == "unknown field"
    assert errors["spec.replicas"] == "must be an integer"


def test_snake_case_is_not_camel_case() -> None:
    admission = admit(hive(pool_mode="warm"))
    assert admission.warnings == ['unknown field "spec.pool_mode"']
    assert admission.object["spec"]["poolMode"] == "cold"
    assert admission.object["spec"]["pool_mode"] == "warm"


def test_odd_keys_are_quoted_in_paths() -> None:
    body = hive()
    body["spec"]["stages"][0]["a.b/c"] = 1
    assert admit(body).warnings == ['unknown field "spec.stages[0]["a.b/c"]"']


def test_secret_spec_is_unknown_because_secrets_are_top_level() -> None:
    body = obj("Secret", {"data": {"k": "YQ=="}})
    assert admit(body).warnings == ['unknown field "spec"']


def test_namespace_on_a_cluster_scoped_kind() -> None:
    body = seed("01")
    body["metadata"]["namespace"] = "default"
    admission = admit(body)
    assert admission.warnings == [
        "metadata.namespace ignored: Cell is cluster-scoped and has no namespace"
    ]
    assert "namespace" not in admission.object["metadata"]
    assert "metadata.namespace" in errors_of(body, strict=True)


def test_free_form_values_are_not_searched_for_unknown_fields() -> None:
    body = agentspec(guardrails={"outputSchema": {"type": "object", "x-whatever": True}})
    body["status"] = {"novel": {"deep": 1}}
    assert admit(body).warnings == []
