"""`apiaryctl patch` against a real apiaryd: merge and JSON patches, dry run, status, the
server's refusals as one error line."""

from __future__ import annotations

import json
from pathlib import Path

from ctlkit import Ctl

HIVE = """apiVersion: apiary.io/v1
kind: Hive
metadata: {{name: h, namespace: {cell}}}
spec:
  pattern: pipeline
  stages:
    - {{name: s, agentRef: a, replicas: 0}}
"""


def make_hive(ctl: Ctl, tmp_path: Path, cell: str) -> None:
    path = tmp_path / "hive.yaml"
    path.write_text(HIVE.format(cell=cell))
    assert ctl("apply", "-f", str(path)).exit_code == 0


def get_hive(ctl: Ctl, cell: str) -> dict:
    r = ctl("get", "hive", "h", "-n", cell, "-o", "json")
    assert r.exit_code == 0, r
    return json.loads(r.stdout)


def test_merge_and_json_patches(ctl: Ctl, tmp_path: Path, cell: str) -> None:
    make_hive(ctl, tmp_path, cell)
    r = ctl("patch", "hive", "h", "-n", cell, "-p", '{"metadata": {"labels": {"team": "a"}}}')
    assert r.exit_code == 0, r
    assert r.stdout.strip() == "hive/h patched"
    assert get_hive(ctl, cell)["metadata"]["labels"] == {"team": "a"}
    ops = '[{"op": "replace", "path": "/spec/stages/0/replicas", "value": 0}]'
    r = ctl("patch", "hive/h", "-n", cell, "--type", "json", "-p", ops, "-o", "json")
    assert r.exit_code == 0, r
    assert json.loads(r.stdout)["spec"]["stages"][0]["replicas"] == 0
    r = ctl("patch", "hive", "h", "-n", cell, "-p", "{metadata: {labels: {team: b}}}", "--dry-run")
    assert r.exit_code == 0 and "dry run" in r.stdout
    assert get_hive(ctl, cell)["metadata"]["labels"] == {"team": "a"}
    f = tmp_path / "p.json"
    f.write_text('{"status": {"phase": "Ready"}}')
    r = ctl("patch", "hive", "h", "-n", cell, "--patch-file", str(f), "--subresource", "status")
    assert r.exit_code == 0, r
    assert get_hive(ctl, cell)["status"]["phase"] == "Ready"


def test_refusals(ctl: Ctl, tmp_path: Path, cell: str) -> None:
    make_hive(ctl, tmp_path, cell)
    bad = '{"spec": {"stages": [{"name": "s", "agentRef": "a", "replicas": "x"}]}}'
    r = ctl("patch", "hive", "h", "-n", cell, "-p", bad)
    assert r.exit_code != 0 and "spec.stages[0].replicas" in r.stderr, r
    stale = '{"metadata": {"resourceVersion": "1"}}'
    r = ctl("patch", "hive", "h", "-n", cell, "-p", stale)
    assert r.exit_code != 0 and "stale" in r.stderr, r
    r = ctl("patch", "hive", "h", "-n", cell, "--type", "json", "-p", '{"a": 1}')
    assert r.exit_code == 2 and "list of operations" in r.stderr, r
    r = ctl("patch", "hive", "h", "-n", cell, "--type", "strategic", "-p", "{}")
    assert r.exit_code == 2, r
    r = ctl("patch", "hive", "nope", "-n", cell, "-p", "{}")
    assert r.exit_code != 0 and "not found" in r.stderr.lower(), r
