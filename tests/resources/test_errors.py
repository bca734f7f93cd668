"""Each kind's important validation errors name the right field, all problems at once."""

from __future__ import annotations

from typing import Any

import pytest

from apiary.resources import ValidationFailed, admit

from .helpers import agentspec, errors_of, hive, obj, seed


def test_not_a_mapping() -> None:
    with pytest.raises(ValidationFailed) as caught:
        admit(["a list"])
    assert caught.value.details[0][0] == ""


def test_envelope_problems_are_reported_together() -> None:
    errors = errors_of({"apiVersion": "v2", "kind": "hive", "metadata": {"name": "Bad_Name"}})
    assert errors["apiVersion"] == "must be 'apiary.io/v1'"
    assert "did you mean 'Hive'" in errors["kind"]
    assert "DNS-1123" in errors["metadata.name"]


def test_missing_kind_and_metadata() -> None:
    errors = errors_of({"apiVersion": "apiary.io/v1"})
    assert errors["kind"] == "field required"
    assert errors["metadata"] == "must be a mapping"


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("a-b-1", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("-a", False),
        ("a.b", False),
        ("A", False),
        ("", False),
    ],
)
def test_names_are_dns_labels(name: str, ok: bool) -> None:
    body = obj("Cell")
    body["metadata"] = {"name": name}
    if ok:
        admit(body)
    else:
        assert "metadata.name" in errors_of(body)


def test_label_and_annotation_rules() -> None:
    body = obj("Cell")
    body["metadata"]["namespace"] = None
    body["metadata"]["labels"] = {"apiary.io/tier": "gold", "ok": "", "bad key": "v", "k": "x y"}
    body["metadata"]["annotations"] = {"Bad.Prefix/x": "anything at all"}
    errors = errors_of(body)
    assert "bad key" in errors["metadata.labels"] or "x y" in errors["metadata.labels"]
    assert "prefix" in errors["metadata.annotations"]
    with pytest.raises(ValidationFailed) as caught:
        admit(body)
    label_messages = [m for f, m in caught.value.details if f == "metadata.labels"]
    assert len(label_messages) == 2


def test_hive_reports_every_problem_with_exact_paths() -> None:
    body = seed("05")
    stages = body["spec"]["stages"]
    stages[0]["replicas"] = "2"
    stages[1]["agentRef"] = 5
    del stages[1]["name"]
    stages[2]["name"] = "stage1"
    body["spec"]["poolMode"] = "lukewarm"
    body["spec"]["webhook"]["url"] = "ftp://x"
    errors = errors_of(body)
    assert errors["spec.stages[0].replicas"] == "must be an integer"
    assert errors["spec.stages[1].agentRef"] == "must be a string"
    assert errors["spec.stages[1].name"] == "field required"
    assert errors["spec.stages[2].name"] == "duplicate name 'stage1' (also at index 0)"
    assert errors["spec.poolMode"].startswith("must be one of 'cold', 'warm' or 'hybrid'")
    assert "http" in errors["spec.webhook.url"]


@pytest.mark.parametrize(
    ("spec", "path", "fragment"),
    [
        ({"stages": None}, "spec.stages", "field required"),
        ({"pattern": None}, "spec.pattern", "field required"),
        ({"pattern": "mesh"}, "spec.pattern", "must be one of"),
        ({"pattern": "composed"}, "spec.pattern", "patternSegments"),
        ({"stages": []}, "spec.stages", "at least 1"),
        ({"stages": [{"name": "Stage_1", "agentRef": "a"}]}, "spec.stages[0].name", "DNS-1123"),
        ({"stages": [{"name": "a"}]}, "spec.stages[0].agentRef", "field required"),
        (
            {"stages": [{"name": "a", "agentRef": "a", "replicas": -1}]},
            "spec.stages[0].replicas",
            "at least 0",
        ),
        (
            {
                "patternSegments": [
                    {
                        "name": "s",
                        "pattern": "pipeline",
                        "config": {"stages": [{"name": "a", "agentRef": "b"}]},
                    }
                ]
            },
            "spec.patternSegments",
            "not be set together",
        ),
        ({"warmPoolSize": 2}, "spec.warmPoolSize", "poolMode cold"),
        ({"swarm": {"aggregation": "majority"}}, "spec.swarm", "pattern swarm"),
        (
            {"routing": {"retryPolicy": {"initialDelaySeconds": 10, "maxDelaySeconds": 5}}},
            "spec.routing.retryPolicy.initialDelaySeconds",
            "maxDelaySeconds",
        ),
        (
            {"routing": {"retryPolicy": {"backoffMultiplier": 0.5}}},
            "spec.routing.retryPolicy.backoffMultiplier",
            "at least 1",
        ),
        ({"routing": {"deadLetterTopic": "bad topic"}}, "spec.routing.deadLetterTopic", "topic"),
        (
            {"session": {"timeoutMinutes": 60, "maxDurationMinutes": 30}},
            "spec.session.timeoutMinutes",
            "maxDurationMinutes",
        ),
        (
            {"webhook": {"url": "https://x.io/h", "events": ["nope"]}},
            "spec.webhook.events[0]",
            "guardrail_violation",
        ),
        ({"guardrails": {"maxTurns": 0}}, "spec.guardrails.maxTurns", "at least 1"),
    ],
)
def test_hive_field_errors(spec: dict[str, Any], path: str, fragment: str) -> None:
    if spec.get("patternSegments"):
        body = hive(**spec)
    else:
        body = hive(**{k: v for k, v in spec.items()})
        for key, value in spec.items():
            if value is None:
                body["spec"].pop(key, None)
    errors = errors_of(body)
    assert path in errors, errors
    assert fragment in errors[path]


def test_hierarchical_has_one_supervisor_and_swarm_settings_apply() -> None:
    stages = [
        {"name": "boss", "agentRef": "a", "role": "supervisor"},
        {"name": "boss2", "agentRef": "a", "role": "supervisor"},
    ]
    errors = errors_of(hive(pattern="hierarchical", stages=stages))
    assert "one supervisor" in errors["spec.stages[1].role"]
    ok = admit(hive(pattern="swarm", swarm={"aggregation": "majority", "rounds": 3})).object
    assert ok["spec"]["swarm"] == {"aggregation": "majority", "rounds": 3}


def test_event_driven_filter_and_approval_are_typed() -> None:
    stage = {
        "name": "a",
        "agentRef": "b",
        "filter": {"type": "event", "metadata": {"k": "v"}},
        "approval": "required",
    }
    admit(hive(pattern="event-driven", stages=[stage]))
    stage["filter"] = {"type": "telegram"}
    stage["approval"] = "maybe"
    errors = errors_of(hive(pattern="event-driven", stages=[stage]))
    assert "spec.stages[0].filter.type" in errors
    assert "spec.stages[0].approval" in errors


def test_composed_segments_are_checked_per_pattern() -> None:
    body = seed("09")
    segments = body["spec"]["patternSegments"]
    segments[2]["config"] = {"stages": [{"name": "a", "agentRef": "b"}], "rounds": 2}
    segments[1]["inputTopic"] = "somewhere/else"
    segments[1]["name"] = "event-stage"
    segments[0]["config"]["subscribers"].append({"name": "subscriber1", "agentRef": "x"})
    errors = errors_of(body)
    assert errors["spec.patternSegments[2].config.stages"].startswith("not used by pattern swarm")
    assert errors["spec.patternSegments[2].config.agents"] == "field required for pattern swarm"
    assert errors["spec.patternSegments[1].name"].startswith("duplicate name")
    assert errors["spec.patternSegments[0].config.subscribers[1].name"].startswith("duplicate")
    body = seed("09")
    body["spec"]["patternSegments"][1]["inputTopic"] = "somewhere/else"
    errors = errors_of(body)
    assert "events/output" in errors["spec.patternSegments[1].inputTopic"]
    body = seed("09")
    body["spec"]["pattern"] = "pipeline"
    assert "composed" in errors_of(body)["spec.pattern"]


def test_agentspec_errors() -> None:
    body = agentspec(
        interface={"type": "http", "healthPath": "healthz"},
        scaling={
            "minReplicas": 5,
            "maxReplicas": 2,
            "scaleUpThreshold": 0.3,
            "scaleDownThreshold": 0.5,
            "cooldownSeconds": -1,
        },
        taskTier="legendary",
        guardrails={
            "outputSchema": {"type": "bogus"},
            "responseTimeoutSeconds": 0,
            "tokenBudgetPerRequest": 1.5,
            "rateLimitPerMinute": True,
        },
    )
    body["spec"]["runtime"] = {"command": [], "env": [{"name": "1X", "value": 3}]}
    errors = errors_of(body)
    assert errors["spec.runtime.command"] == "must have at least 1 item(s)"
    assert "environment variable" in errors["spec.runtime.env[0].name"]
    assert errors["spec.runtime.env[0].value"] == "must be a string"
    assert errors["spec.interface.port"] == "field required when type is http"
    assert "must start with '/'" in errors["spec.interface.healthPath"]
    assert errors["spec.scaling.cooldownSeconds"] == "must not be negative"
    assert errors["spec.taskTier"].startswith("must be one of 'simple', 'standard' or 'complex'")
    assert "invalid JSON Schema" in errors["spec.guardrails.outputSchema.type"]
    assert errors["spec.guardrails.responseTimeoutSeconds"] == "must be greater than 0"
    assert errors["spec.guardrails.tokenBudgetPerRequest"] == "must be an integer"
    assert errors["spec.guardrails.rateLimitPerMinute"] == "must be an integer"


def test_agentspec_cross_field_rules() -> None:
    errors = errors_of(
        agentspec(
            scaling={
                "minReplicas": 5,
                "maxReplicas": 2,
                "scaleUpThreshold": 0.3,
                "scaleDownThreshold": 0.5,
            }
        )
    )
    assert errors["spec.scaling.minReplicas"] == "must not exceed maxReplicas (2)"
    assert "scaleUpThreshold" in errors["spec.scaling.scaleDownThreshold"]
    errors = errors_of(agentspec(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}))
    assert errors["spec.resources.requests.cpu"] == "2000 must not exceed limits.cpu (500)"
    errors = errors_of(agentspec(interface={"type": "stdin", "port": 8080}))
    assert errors["spec.interface.port"] == "only used with type: http"
    errors = errors_of(agentspec(replicas=9, scaling={"minReplicas": 1, "maxReplicas": 3}))
    assert "1..3" in errors["spec.replicas"]
    env = [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    body = agentspec()
    body["spec"]["runtime"]["env"] = env
    assert errors_of(body)["spec.runtime.env[0].valueFrom"] == "may not be set together with value"
    body["spec"]["runtime"]["env"] = [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "S"}}}]
    errors = errors_of(body)
    assert "DNS-1123" in errors["spec.runtime.env[0].valueFrom.secretKeyRef.name"]
    assert errors["spec.runtime.env[0].valueFrom.secretKeyRef.key"] == "field required"


def test_agentspec_http_interface_defaults() -> None:
    spec = admit(agentspec(interface={"type": "http", "port": 8080, "concurrency": 8})).object
    assert spec["spec"]["interface"] == {
        "type": "http",
        "format": "waggle",
        "port": 8080,
        "healthPath": "/healthz",
        "messagePath": "/",
        "concurrency": 8,
    }


def test_secret_errors() -> None:
    body = obj("Secret", data={"k": "not base64!", "bad key": "YQ=="}, stringData={"x": 1})
    errors = errors_of(body)
    assert errors["data.k"] == "must be base64 (use stringData for plain text)"
    assert "not a valid secret key" in errors['data["bad key"]']
    assert errors["stringData.x"] == "must be a string"
    ok = admit(obj("Secret", stringData={"token": "plain"}, type="Opaque")).object
    assert ok["stringData"] == {"token": "plain"}


def test_cell_errors() -> None:
    body = obj(
        "Cell",
        {
            "resourceQuota": {"maxHives": -1, "maxCPU": "lots", "maxMemoryGB": "1"},
            "defaults": {"guardrails": {"rateLimitPerMinute": 0}},
        },
    )
    body["metadata"].pop("namespace")
    errors = errors_of(body)
    assert errors["spec.resourceQuota.maxHives"] == "must be at least 0"
    assert "not a quantity" in errors["spec.resourceQuota.maxCPU"]
    assert errors["spec.resourceQuota.maxMemoryGB"] == "must be a number"
    assert errors["spec.defaults.guardrails.rateLimitPerMinute"] == "must be at least 1"


def test_drone_session_node_event_errors() -> None:
    errors = errors_of(obj("Drone", {"runtime": {"command": ["x"]}, "ordinal": -1}))
    assert errors["spec.agentSpec"] == "field required"
    assert errors["spec.ordinal"] == "must be at least 0"
    assert errors_of(obj("Session", {}))["spec.hiveRef"] == "field required"
    node = obj("Node", {"unschedulable": "yes", "capacity": {"cpu": -5}})
    node["metadata"].pop("namespace")
    errors = errors_of(node)
    assert errors["spec.unschedulable"] == "must be true or false"
    assert "negative" in errors["spec.capacity.cpu"]
    event = obj(
        "Event",
        involvedObject={"kind": "Pod", "name": "x"},
        type="Error",
        count=0,
        firstTimestamp="2024-01-02T00:00:00Z",
        lastTimestamp="yesterday",
    )
    errors = errors_of(event)
    assert "unknown kind 'Pod'" in errors["involvedObject.kind"]
    assert errors["reason"] == "field required"
    assert errors["type"].startswith("must be one of 'Normal' or 'Warning'")
    assert errors["count"] == "must be at least 1"
    assert "RFC 3339" in errors["lastTimestamp"]


def test_event_is_top_level_like_kubernetes() -> None:
    event = obj(
        "Event",
        involvedObject={"kind": "Drone", "name": "d-1", "namespace": "default", "uid": "u"},
        reason="CrashLoopBackOff",
        firstTimestamp="2024-01-02T00:00:00Z",
        lastTimestamp="2024-01-02T00:05:00+00:00",
    )
    out = admit(event).object
    assert out["type"] == "Normal" and out["count"] == 1
    event["lastTimestamp"] = "2024-01-01T00:00:00Z"
    assert "before firstTimestamp" in errors_of(event)["lastTimestamp"]


def test_status_on_create_only_needs_to_be_a_mapping() -> None:
    body = hive()
    body["status"] = {"phase": 42, "anything": ["goes"]}
    assert admit(body).object["status"] == {"phase": 42, "anything": ["goes"]}
    body["status"] = ["no"]
    assert errors_of(body)["status"] == "must be a mapping"


def test_references_are_not_resolved() -> None:
    """A Hive may arrive before the AgentSpecs it names; only the name's syntax is checked."""
    admit(hive(stages=[{"name": "a", "agentRef": "does-not-exist-yet"}]))


def test_absurd_nesting_is_an_error_not_a_crash() -> None:
    deep: Any = "bottom"
    for _ in range(5000):
        deep = {"x": deep}
    body = agentspec(guardrails={"outputSchema": deep})
    with pytest.raises(ValidationFailed) as caught:
        admit(body)  # not errors_of: its deepcopy would hit the recursion limit itself
    ((path, message),) = caught.value.details
    assert path.startswith("spec.guardrails.outputSchema.x.x")
    assert message == "nested more than 100 levels deep"
