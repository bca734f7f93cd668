"""kubectl habits: ``-o jsonpath=…``, ``explain KIND[.field]`` and ``api-resources``."""

from __future__ import annotations

import pytest
from ctlkit import Ctl

from apiary.ctl import jsonpath

DOC = {
    "kind": "DroneList",
    "items": [
        {"metadata": {"name": "a", "labels": {"app": "x", "tier.io/t": "1"}},
         "status": {"phase": "Running", "ready": True, "restartCount": 0}},
        {"metadata": {"name": "b", "labels": {"app": "y"}},
         "status": {"phase": "Failed", "reason": "CrashLoopBackOff", "ready": False,
                    "restartCount": 4}},
        {"metadata": {"name": "c"}, "status": {"phase": "Pending"}},
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("template", "want"),
    [
        ("{.kind}", "DroneList"),
        ("{.items[*].metadata.name}", "a b c"),
        ("{.items[0].metadata.name}", "a"),
        ("{.items[-1].metadata.name}", "c"),
        ("{.items[0:2].metadata.name}", "a b"),
        ("{.items[1].status.restartCount}", "4"),
        ("{.items[0].status.ready}", "true"),
        ("{.items[0].metadata.labels}", '{"app": "x", "tier.io/t": "1"}'),
        ("{.items[0].metadata.labels['tier.io/t']}", "1"),
        ('{.items[?(@.status.phase=="Failed")].status.reason}', "CrashLoopBackOff"),
        ("{.items[?(@.status.restartCount>0)].metadata.name}", "b"),
        ("{.items[?(@.status.reason)].metadata.name}", "b"),
        ("{.items[?(@.metadata.labels.app!='x')].metadata.name}", "b c"),
        ("{..phase}", "Running Failed Pending"),
        ("{.items[*].status.nothing}", ""),
        (
            '{range .items[*]}{.metadata.name}={.status.phase}{"\\n"}{end}',
            "a=Running\nb=Failed\nc=Pending\n",
        ),
        ("names: {.items[*].metadata.name}!", "names: a b c!"),
        ("{range .items[*]}[{.metadata.name}]{end}", "[a][b][c]"),
        ("{'\\t'}", "\t"),
    ],
)
def test_jsonpath(template: str, want: str) -> None:
    assert jsonpath.render(template, DOC) == want


@pytest.mark.parametrize("bad", ["{.items[0", "{range .items[*]}x", "{end}", "x}", "{.a b}"])
def test_jsonpath_malformed(bad: str) -> None:
    with pytest.raises(jsonpath.JsonPathError):
        jsonpath.parse(bad)


def test_get_with_jsonpath(ctl: Ctl, cell: str) -> None:
    with ctl.server.client(cell=cell) as c:
        for name in ("alpha", "beta"):
            c.apply({"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                     "metadata": {"name": name, "namespace": cell, "labels": {"n": name}},
                     "spec": {"runtime": {"command": ["cat"]}}})  # fmt: skip
    r = ctl("get", "agentspecs", "-n", cell, "-o", "jsonpath={.items[*].metadata.name}")
    assert (r.exit_code, r.stdout) == (0, "alpha beta\n"), r
    r = ctl("get", "agentspec", "beta", "-n", cell, "-o=jsonpath={.metadata.labels.n}")
    assert r.stdout == "beta\n", r
    r = ctl("-ojsonpath={range .items[*]}{.metadata.name}{'\\n'}{end}", "get", "as", "-n", cell)
    assert r.stdout == "alpha\nbeta\n", r
    r = ctl("get", "agentspecs", "-n", cell, "-o", "jsonpath={.items[0")
    assert r.exit_code == 2 and "jsonpath: unclosed '{'" in r.stderr, r


def test_explain_a_kind_and_a_field(ctl: Ctl) -> None:
    r = ctl("explain", "hive")
    assert r.exit_code == 0, r
    assert r.stdout.startswith("KIND:     Hive\nVERSION:  apiary.io/v1\n")
    assert "spec" in r.stdout and "<HiveSpec> -required-" in r.stdout
    r = ctl("explain", "hive.spec.stages")
    assert "FIELD:    stages <[]Stage>" in r.stdout, r
    assert "agentRef" in r.stdout and "Name of an AgentSpec in the same Cell" in r.stdout
    assert "(default 1; >= 0)" in r.stdout  # replicas: its default and bound
    r = ctl("explain", "hv.spec.poolMode")  # short names work; enums are listed
    assert "FIELD:    poolMode <string>" in r.stdout and "one of cold, warm, hybrid" in r.stdout
    r = ctl("explain", "drone.status")
    assert "reason" in r.stdout and "lastStderr" in r.stdout, r  # the status model, not {}
    r = ctl("explain", "agentspec.spec.runtime", "--recursive")
    assert "secretKeyRef" in r.stdout, r


def test_explain_errors(ctl: Ctl) -> None:
    r = ctl("explain", "hive.spec.nope")
    assert r.exit_code == 2 and "hive.spec has no field 'nope'" in r.stderr, r
    assert "stages" in r.stderr  # what there is instead
    r = ctl("explain", "gizmo")
    assert r.exit_code == 2 and "unknown kind 'gizmo'" in r.stderr, r


def test_api_resources(ctl: Ctl) -> None:
    r = ctl("api-resources")
    assert r.exit_code == 0, r
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    hives = next(line.split() for line in lines if line.startswith("hives "))
    assert hives == ["hives", "hv", "apiary.io/v1", "true", "Hive"]
    assert not any("/" in line.split()[0] for line in lines[1:])  # no subresources
    assert "watch" in ctl("api-resources", "-o", "wide").stdout
    assert "cells" in ctl("api-resources", "-o", "name").stdout.split()
