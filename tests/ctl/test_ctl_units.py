"""Pure parts of the CLI and client: durations, argv handling, manifest parsing, error mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from apiary import errors
from apiary.client import (
    error_from_response,
    normalize_server,
    normalized,
    parse_warnings,
    resolve_token,
)
from apiary.ctl import tables
from apiary.ctl.durations import format_age, parse_duration
from apiary.ctl.main import hoist_globals
from apiary.ctl.manifests import ManifestError, apply_order, parse_text, read_documents


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("2", 2),
        ("1.5s", 1.5),
        ("2d", 172800),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "1h 2m", "-3", "s"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_ages_are_compact() -> None:
    assert [format_age(s) for s in (5, 119, 600, 7199, 7200 * 3, 86400 * 5)] == [
        "5s",
        "119s",
        "10m",
        "119m",
        "6h",
        "5d",
    ]
    now = datetime(2026, 1, 2, tzinfo=UTC)
    ts = (now - timedelta(minutes=7)).isoformat().replace("+00:00", "Z")
    assert tables.age(ts, now) == "7m"
    assert tables.age(None, now) == "-"


def test_global_options_may_follow_the_subcommand() -> None:
    assert hoist_globals(["get", "hives", "-o", "yaml", "-n", "c1"]) == [
        "-o",
        "yaml",
        "-n",
        "c1",
        "get",
        "hives",
    ]
    assert hoist_globals(["get", "hv", "-oyaml", "--server=http://x:1"]) == [
        "-o",
        "yaml",
        "--server=http://x:1",
        "get",
        "hv",
    ]
    # after "--" nothing is touched; non-global options stay with the command
    assert hoist_globals(["apply", "-f", "-", "--", "-o"]) == ["apply", "-f", "-", "--", "-o"]


def test_multi_document_yaml_keeps_going_past_a_bad_document() -> None:
    text = (
        "# leading comment\n---\napiVersion: apiary.io/v1\nkind: Hive\nmetadata: {name: a}\n"
        "---\nkind: Cell\nmetadata: [unclosed\n"
        "---\n- just\n- a list of strings\n"
        "---\napiVersion: apiary.io/v1\nkind: Cell\nmetadata: {name: c}\n"
    )
    docs = parse_text(text, "m.yaml")
    assert [d.index for d in docs] == [1, 2, 3, 3, 4]
    assert docs[0].obj is not None and docs[0].obj["kind"] == "Hive"
    assert docs[1].obj is None and docs[1].error is not None
    assert "line 8" in docs[1].error and docs[1].where == "m.yaml document 2 (line 7)"
    assert docs[2].error == "must be a mapping (object), got str"
    assert [d.obj["kind"] for d in apply_order(docs) if d.obj] == ["Cell", "Hive"]


def test_json_files_and_list_objects_expand_to_their_items(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(
        '{"kind": "HiveList", "items": [{"kind": "Hive", "metadata": {"name": "x"}}]}'
    )
    (tmp_path / "b.json").write_text('{"kind": "Cell",\n "metadata": {"name": }}')
    (tmp_path / "notes.txt").write_text("ignored")
    docs = read_documents([str(tmp_path)])
    assert docs[0].obj == {"kind": "Hive", "metadata": {"name": "x"}}
    assert docs[1].error is not None and docs[1].line == 2 and "invalid JSON" in docs[1].error
    with pytest.raises(ManifestError, match="no such file"):
        read_documents([str(tmp_path / "missing.yaml")])


def test_apply_order_is_cells_secrets_agentspecs_hives_then_the_rest() -> None:
    kinds = ["Hive", "Session", "AgentSpec", "Secret", "Cell", "Hive"]
    text = "\n---\n".join(f"kind: {k}\nmetadata: {{name: n{i}}}" for i, k in enumerate(kinds))
    ordered = [d.obj["kind"] for d in apply_order(parse_text(text, "x")) if d.obj]
    assert ordered == ["Cell", "Secret", "AgentSpec", "Hive", "Hive", "Session"]


def test_warning_headers_are_unquoted() -> None:
    assert parse_warnings(['299 - "unknown field \\"spec.foo\\""', "plain text"]) == [
        'unknown field "spec.foo"',
        "plain text",
    ]


def test_error_bodies_become_the_matching_exception_with_details() -> None:
    exc = error_from_response(
        422,
        '{"code":422,"reason":"Invalid","message":"bad","details":'
        '[{"field":"spec.stages[1].agentRef","message":"required"}]}',
    )
    assert isinstance(exc, errors.Invalid) and exc.message == "bad"
    assert exc.details == [errors.FieldDetail("spec.stages[1].agentRef", "required")]
    assert isinstance(
        error_from_response(403, '{"reason":"QuotaExceeded","message":"q"}'), errors.QuotaExceeded
    )
    assert isinstance(
        error_from_response(409, '{"reason":"AlreadyExists","message":"x"}'), errors.AlreadyExists
    )
    odd = error_from_response(502, "<html>bad gateway</html>")
    assert odd.status == 502 and "bad gateway" in odd.message


def test_normalized_drops_what_the_server_owns() -> None:
    obj = {
        "kind": "Hive",
        "metadata": {
            "name": "a",
            "uid": "u",
            "resourceVersion": "3",
            "generation": 2,
            "creationTimestamp": "t",
            "labels": {},
        },
        "spec": {},
        "status": {},
    }
    assert normalized(obj) == {"kind": "Hive", "metadata": {"name": "a"}, "spec": {}}


def test_token_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIARY_CONFIG", str(tmp_path / "config.yaml"))
    monkeypatch.setenv("APIARY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("APIARY_TOKEN", raising=False)
    local, remote = "http://127.0.0.1:8080", "http://apiary.example:8080"
    assert resolve_token(local) is None
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "admin.token").write_text("from-file\n")
    assert resolve_token(local) == "from-file"
    assert resolve_token(remote) is None  # never read a local file for a remote server
    (tmp_path / "config.yaml").write_text("token: from-config\n")
    assert resolve_token(remote) == "from-config"
    monkeypatch.setenv("APIARY_TOKEN", "from-env")
    assert resolve_token(local) == "from-env"
    assert resolve_token(local, "explicit") == "explicit"
    assert normalize_server("localhost:9/") == "http://localhost:9"
