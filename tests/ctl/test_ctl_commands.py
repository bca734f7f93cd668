"""get/describe/delete/diff/wait/strict/secrets against a real apiaryd, one cell per test."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import yaml
from ctlkit import Ctl, Run

AGENT = """apiVersion: apiary.io/v1
kind: AgentSpec
metadata:
  name: {name}
  namespace: {cell}
  labels: {{app: {app}}}
spec:
  runtime:
    command: [cat]
  interface:
    type: stdin
"""
HIVE = """apiVersion: apiary.io/v1
kind: Hive
metadata:
  name: {name}
  namespace: {cell}
spec:
  pattern: pipeline
  stages:
    - name: only
      agentRef: {agent}
      replicas: {replicas}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_get_formats_selectors_and_all_cells(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    docs = "---\n".join(
        AGENT.format(name=n, cell=cell, app=a) for n, a in (("a1", "x"), ("a2", "y"), ("a3", "x"))
    )
    assert ctl("apply", "-f", write(tmp_path, "a.yaml", docs)).exit_code == 0
    r = ctl("get", "agentspecs", "-n", cell, "-l", "app=x", "-o", "name")
    assert r.stdout.split() == ["agentspec/a1", "agentspec/a3"], r
    r = ctl("-n", cell, "get", "as", "-o", "json")
    listing = json.loads(r.stdout)
    assert listing["kind"] == "AgentSpecList" and len(listing["items"]) == 3
    r = ctl("get", "agentspec", "a2", "-n", cell, "-o", "wide")
    header, row = r.stdout.splitlines()
    assert header.split()[:2] == ["NAME", "INTERFACE"] and "COMMAND" in header
    assert row.split()[:2] == ["a2", "stdin"] and "app=y" in row
    r = ctl("get", "agentspecs", "-A")
    assert r.stdout.splitlines()[0].split()[:2] == ["CELL", "NAME"]
    assert any(line.split()[:2] == [cell, "a1"] for line in r.stdout.splitlines()), r
    r = ctl("get", "agentspec/a1", "-n", cell, "-o", "yaml")
    assert yaml.safe_load(r.stdout)["metadata"]["labels"] == {"app": "x"}


def test_get_missing_object_and_unknown_kind(ctl: Ctl, cell: str) -> None:
    r = ctl("get", "hive", "nope", "-n", cell)
    assert r.exit_code == 1 and r.stdout == "", r
    assert r.stderr.startswith("error: ") and "nope" in r.stderr and "Traceback" not in r.stderr
    r = ctl("get", "widgets")
    assert r.exit_code == 2 and "unknown kind 'widgets'" in r.stderr, r
    r = ctl("get", "hives", "-o", "xml")
    assert r.exit_code == 2 and "'xml' is not one of" in r.stderr, r


def test_describe_shows_spec_conditions_and_events(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    hive = HIVE.format(name="h", cell=cell, agent="ghost", replicas=1)
    assert ctl("apply", "-f", write(tmp_path, "h.yaml", hive)).exit_code == 0
    r = ctl("wait", "hive/h", "-n", cell, "--for=condition=ResolvedRefs=False", "--timeout=10s")
    assert r.exit_code == 0, r
    r = ctl("describe", "hive", "h", "-n", cell)
    assert r.exit_code == 0, r
    out = r.stdout
    assert f"Cell:         {cell}" in out and "Kind:         Hive" in out
    assert "Spec:\n  pattern: pipeline" in out and "agentRef: ghost" in out
    assert "Conditions:" in out and "ResolvedRefs   False" in out and "ghost" in out
    assert "Events:" in out
    r = ctl("describe", "hive/missing", "-n", cell)
    assert r.exit_code == 1 and "error:" in r.stderr


def test_secrets_are_redacted_unless_revealed(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    secret = (
        f"apiVersion: apiary.io/v1\nkind: Secret\nmetadata: {{name: s, namespace: {cell}}}\n"
        "stringData: {password: hunter2}\n"
    )
    assert ctl("apply", "-f", write(tmp_path, "s.yaml", secret)).exit_code == 0
    plain = ctl("get", "secret", "s", "-n", cell, "-o", "yaml")
    assert "hunter2" not in plain.stdout and "aHVudGVyMg==" not in plain.stdout
    assert yaml.safe_load(plain.stdout)["data"] == {"password": "<redacted>"}
    shown = ctl("get", "secret", "s", "-n", cell, "-o", "yaml", "--reveal")
    assert yaml.safe_load(shown.stdout)["data"] == {"password": "aHVudGVyMg=="}
    described = ctl("describe", "secret", "s", "-n", cell).stdout
    assert "password: 7 bytes" in described or "password: <redacted>" in described
    assert "aHVudGVyMg==" not in described
    r = ctl("apply", "-f", str(tmp_path / "s.yaml"))
    assert r.stdout.strip() == "secret/s unchanged", r
    changed = secret.replace("hunter2", "hunter3")
    r = ctl("diff", "-f", write(tmp_path, "s2.yaml", changed))
    assert r.exit_code == 1 and "hunter" not in r.stdout and "<redacted: changed>" in r.stdout, r


def test_apply_never_prints_a_secret_value(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    """``apply -o yaml`` (created, unchanged, configured) and ``--dry-run -o yaml`` show keys with
    ``<redacted>`` values, never the value or its base64."""
    secret = (
        f"apiVersion: apiary.io/v1\nkind: Secret\nmetadata: {{name: s, namespace: {cell}}}\n"
        "stringData: {password: hunter2}\n"
    )
    path = write(tmp_path, "s.yaml", secret)
    changed = write(tmp_path, "s2.yaml", secret.replace("hunter2", "hunter3"))
    added = write(tmp_path, "s3.yaml", secret.replace("{password: hunter2}", "{token: tok3n}"))
    runs = [
        ctl("apply", "-f", path, "--dry-run", "-o", "yaml"),  # would create
        ctl("apply", "-f", path, "-o", "yaml"),  # created
        ctl("apply", "-f", path, "-o", "yaml"),  # unchanged
        ctl("apply", "-f", changed, "--dry-run", "-o", "yaml"),  # would configure
        ctl("apply", "-f", changed, "-o", "json"),  # configured
    ]
    for r in runs:
        assert r.exit_code == 0, r
        for leak in ("hunter", "aHVudGVy"):
            assert leak not in r.stdout, r
        shown = yaml.safe_load(r.stdout.removeprefix("---\n"))
        assert shown["data"] == {"password": "<redacted>"}, r
        assert "stringData" not in shown
    # stringData folded into data, as the store would: the new key is shown, redacted.
    r = ctl("apply", "-f", added, "--dry-run", "-o", "yaml")
    shown = yaml.safe_load(r.stdout.removeprefix("---\n"))
    assert shown["data"] == {"token": "<redacted>"} and "tok3n" not in r.stdout, r


def test_server_dry_run_of_a_secret_shows_what_would_be_stored(ctl: Ctl, cell: str) -> None:
    """A dry-run update folds ``stringData`` into ``data`` (what the store keeps), redacted unless
    ``reveal``."""
    client = ctl.server.client()
    base = {
        "apiVersion": "apiary.io/v1",
        "kind": "Secret",
        "metadata": {"name": "d", "namespace": cell},
    }
    client.create({**base, "stringData": {"a": "1"}})
    path = f"/api/v1/cells/{cell}/secrets/d"
    body = {**base, "stringData": {"b": "2"}, "data": {"a": "MQ=="}}
    plain = client.request("PUT", path, params={"dryRun": "All"}, json_body=body).body
    assert plain["data"] == {"a": "<redacted>", "b": "<redacted>"} and "stringData" not in plain
    dry = {"dryRun": "All", "reveal": "true"}
    shown = client.request("PUT", path, params=dry, json_body=body).body
    assert shown["data"] == {"a": "MQ==", "b": "Mg=="} and "stringData" not in shown
    assert client.get("Secret", "d", cell)["data"] == {"a": "<redacted>"}  # nothing was stored


def test_delete_by_name_and_by_file(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        AGENT.format(name="a", cell=cell, app="z")
        + "---\n"
        + HIVE.format(name="h", cell=cell, agent="a", replicas=1),
    )
    assert ctl("apply", "-f", path).exit_code == 0
    r = ctl("delete", "hive", "h", "-n", cell)
    assert (r.exit_code, r.stdout.strip()) == (0, "hive/h deleted"), r
    r = ctl("delete", "hive", "h", "-n", cell)
    assert r.exit_code == 1 and "error:" in r.stderr, r
    assert ctl("delete", "hive", "h", "-n", cell, "--ignore-not-found").exit_code == 0
    r = ctl("delete", "-f", path, "--ignore-not-found")
    assert (r.exit_code, r.stdout.strip()) == (0, "agentspec/a deleted"), r
    assert ctl("get", "agentspecs", "-n", cell, "-o", "name").stdout == ""


def test_diff_exit_codes(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    path = write(tmp_path, "h.yaml", HIVE.format(name="h", cell=cell, agent="a", replicas=1))
    r = ctl("diff", "-f", path)
    assert r.exit_code == 1 and "+  name: h" in r.stdout, r  # not there yet: all new
    assert ctl("apply", "-f", path).exit_code == 0
    r = ctl("diff", "-f", path)
    assert (r.exit_code, r.stdout) == (0, ""), r
    write(tmp_path, "h.yaml", HIVE.format(name="h", cell=cell, agent="a", replicas=4))
    r = ctl("diff", "-f", path)
    assert r.exit_code == 1, r
    assert "-    replicas: 1\n+    replicas: 4" in r.stdout and "live/hive/h" in r.stdout
    bad = write(tmp_path, "bad.yaml", HIVE.format(name="h", cell=cell, agent="a", replicas=-1))
    r = ctl("diff", "-f", bad)
    assert r.exit_code == 2 and "replicas" in r.stderr, r
    # nothing was changed by diff
    assert "replicas: 1" in ctl("get", "hive", "h", "-n", cell, "-o", "yaml").stdout


def test_unknown_fields_warn_and_strict_refuses(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    text = AGENT.format(name="w", cell=cell, app="w").replace(
        "  interface:", "  flavour: vanilla\n  interface:"
    )
    path = write(tmp_path, "w.yaml", text)
    r = ctl("apply", "-f", path, "--strict")
    assert r.exit_code == 1 and "spec.flavour" in r.stderr, r
    assert "w.yaml document 1" in r.stderr
    assert ctl("get", "agentspecs", "-n", cell, "-o", "name").stdout == ""
    r = ctl("apply", "-f", path)
    assert r.exit_code == 0 and r.stdout.strip() == "agentspec/w created", r
    assert "Warning: agentspec/w:" in r.stderr and "spec.flavour" in r.stderr


def test_invalid_document_is_reported_and_the_rest_applied(
    ctl: Ctl, cell: str, tmp_path: Path
) -> None:
    good = AGENT.format(name="ok", cell=cell, app="o")
    bad = HIVE.format(name="h", cell=cell, agent="ok", replicas="lots")
    unknown = f"apiVersion: apiary.io/v1\nkind: Widget\nmetadata: {{name: w, namespace: {cell}}}\n"
    path = write(tmp_path, "mixed.yaml", bad + "---\n" + unknown + "---\n" + good)
    r = ctl("apply", "-f", path)
    assert r.exit_code == 1, r
    assert r.stdout.strip() == "agentspec/ok created"
    assert "mixed.yaml document 1" in r.stderr and "spec.stages[0].replicas" in r.stderr
    assert "mixed.yaml document 2" in r.stderr and "kind" in r.stderr
    assert "2 of 3 document(s) failed" in r.stderr and "Traceback" not in r.stderr


def test_bad_yaml_names_file_and_line(ctl: Ctl, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "broken.yaml",
        "apiVersion: apiary.io/v1\nkind: Hive\nmetadata:\n  name: [x\n  labels: {}\n",
    )
    r = ctl("apply", "-f", path)
    assert r.exit_code == 1, r
    assert "broken.yaml document 1" in r.stderr and "invalid YAML at line" in r.stderr
    assert "Traceback" not in r.stderr
    r = ctl("apply", "-f", str(tmp_path / "nothing-here.yaml"))
    assert r.exit_code == 1 and "no such file or directory" in r.stderr


def test_apply_reads_stdin_and_json(ctl: Ctl, cell: str) -> None:
    obj = yaml.safe_load(AGENT.format(name="j", cell=cell, app="j"))
    r = ctl("apply", "-f", "-", input=json.dumps(obj))
    assert r.stdout.strip() == "agentspec/j created", r
    obj["metadata"].pop("namespace")  # -n supplies the cell
    r = ctl("apply", "-f", "-", "-n", cell, input=yaml.safe_dump(obj))
    assert r.stdout.strip() == "agentspec/j unchanged", r


def _in_thread(ctl: Ctl, *args: str) -> tuple[threading.Thread, list[Run]]:
    results: list[Run] = []
    t = threading.Thread(target=lambda: results.append(ctl(*args)))
    t.start()
    return t, results


def test_wait_for_condition_timeout_and_delete(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    path = write(tmp_path, "h.yaml", HIVE.format(name="h", cell=cell, agent="late", replicas=1))
    assert ctl("apply", "-f", path).exit_code == 0
    started = time.monotonic()
    r = ctl("wait", "hive/h", "-n", cell, "--for=condition=ResolvedRefs", "--timeout", "1s")
    assert r.exit_code == 1 and "timed out after 1s" in r.stderr, r
    assert time.monotonic() - started < 5
    t, results = _in_thread(
        ctl, "wait", "hive", "h", "-n", cell, "--for", "condition=ResolvedRefs", "--timeout", "20s"
    )
    time.sleep(0.3)  # let the watch start; waiting covers both orders anyway
    with ctl.server.client() as c:
        c.create(
            {
                "apiVersion": "apiary.io/v1",
                "kind": "AgentSpec",
                "metadata": {"name": "late", "namespace": cell},
                "spec": {"runtime": {"command": ["cat"]}},
            }
        )
    t.join(25)
    assert results and results[0].exit_code == 0, results
    t, results = _in_thread(ctl, "wait", "hive/h", "-n", cell, "--for=delete", "--timeout=20s")
    time.sleep(0.3)
    with ctl.server.client() as c:
        c.delete("hive", "h", cell)
    t.join(25)
    assert results and (results[0].exit_code, results[0].stdout.strip()) == (0, "hive/h deleted")
    r = ctl("wait", "hive/h", "-n", cell, "--for=sideways")
    assert r.exit_code == 2 and "--for" in r.stderr, r


def test_get_watch_streams_changes(ctl: Ctl, cell: str) -> None:
    t, results = _in_thread(
        ctl, "get", "agentspecs", "-n", cell, "-w", "-o", "name", "--watch-timeout", "1500ms"
    )
    time.sleep(0.5)  # the change comes while the watch runs (1 s before it ends)
    with ctl.server.client() as c:
        c.create(
            {
                "apiVersion": "apiary.io/v1",
                "kind": "AgentSpec",
                "metadata": {"name": "streamed", "namespace": cell},
                "spec": {"runtime": {"command": ["cat"]}},
            }
        )
    t.join(10)
    assert results and results[0].exit_code == 0, results
    assert "agentspec/streamed" in results[0].stdout.split()


def test_describe_lists_the_objects_events(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    assert (
        ctl(
            "apply", "-f", write(tmp_path, "a.yaml", AGENT.format(name="ev", cell=cell, app="e"))
        ).exit_code
        == 0
    )
    with ctl.server.client() as c:
        c.create(
            {
                "apiVersion": "apiary.io/v1",
                "kind": "Event",
                "metadata": {"name": "ev-1", "namespace": cell},
                "involvedObject": {"kind": "AgentSpec", "name": "ev", "namespace": cell},
                "reason": "Tested",
                "message": "described by a test",
                "type": "Warning",
                "count": 2,
            }
        )
        c.create(
            {
                "apiVersion": "apiary.io/v1",
                "kind": "Event",
                "metadata": {"name": "other-1", "namespace": cell},
                "involvedObject": {"kind": "AgentSpec", "name": "other", "namespace": cell},
                "reason": "Elsewhere",
                "message": "not ours",
                "type": "Normal",
            }
        )
    out = ctl("describe", "agentspec/ev", "-n", cell).stdout
    events = out[out.index("Events:") :]
    assert "Tested" in events and "described by a test" in events and "Warning" in events
    assert "Elsewhere" not in events
    r = ctl("get", "events", "-n", cell)
    assert r.stdout.splitlines()[0].split()[:4] == ["LAST", "SEEN", "TYPE", "REASON"]
    assert "agentspec/ev" in r.stdout


def test_quota_refusal_is_reported_with_its_name(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    cell_doc = (
        f"apiVersion: apiary.io/v1\nkind: Cell\nmetadata: {{name: {cell}}}\n"
        "spec: {resourceQuota: {maxAgentSpecs: 1}}\n"
    )
    agents = "---\n".join(AGENT.format(name=n, cell=cell, app=n) for n in ("q1", "q2"))
    r = ctl("apply", "-f", write(tmp_path, "q.yaml", agents + "---\n" + cell_doc))
    assert r.exit_code == 1, r
    assert r.stdout.splitlines() == [f"cell/{cell} created", "agentspec/q1 created"]
    assert "agentspec/q2" in r.stderr and "maxAgentSpecs" in r.stderr
