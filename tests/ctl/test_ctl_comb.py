"""apiaryctl comb … and apiaryctl memory … against a real apiaryd."""

from __future__ import annotations

import json

from ctlkit import Ctl


def _session(ctl: Ctl, cell: str, name: str = "chat") -> None:
    with ctl.server.client() as c:
        meta = {"name": name, "namespace": cell}
        c.create({"apiVersion": "apiary.io/v1", "kind": "Session", "metadata": meta,
                  "spec": {"hiveRef": "h"}})  # fmt: skip


def test_comb_set_get_incr_keys_delete_clear(ctl: Ctl, cell: str) -> None:
    _session(ctl, cell)
    n = ["-n", cell]
    assert (
        ctl("comb", "set", "session/chat", "profile", '{"name": "Ada"}', *n).stdout
        == "profile set\n"
    )
    assert json.loads(ctl("comb", "get", "session/chat", "profile", *n).stdout) == {"name": "Ada"}
    ctl("comb", "set", "sessions/chat", "greeting", "hello world", *n)
    assert ctl("comb", "get", "chat", "greeting", *n).stdout == "hello world\n"
    ctl("comb", "set", "session/chat", "zip", "01234", "--string", *n)
    assert ctl("comb", "get", "session/chat", "zip", "-o", "json", *n).stdout.count('"01234"') == 1
    assert ctl("comb", "incr", "session/chat", "visits", *n).stdout == "1\n"
    assert ctl("comb", "incr", "session/chat", "visits", "--by", "4", *n).stdout == "5\n"
    run = ctl("comb", "keys", "session/chat", *n)
    assert run.stdout.split() == ["greeting", "profile", "visits", "zip"]
    assert "bytes used" in run.stderr
    assert ctl("comb", "keys", "session/chat", "[gp]*", *n).stdout.split() == [
        "greeting",
        "profile",
    ]
    assert ctl("comb", "delete", "session/chat", "zip", *n).stdout == "zip deleted\n"
    missing = ctl("comb", "get", "session/chat", "zip", *n)
    assert missing.exit_code == 1 and "'zip' not found" in missing.stderr
    assert "cleared 3" in ctl("comb", "clear", "session/chat", *n).stdout
    assert ctl("comb", "keys", "session/chat", *n).stdout == "\n"


def test_comb_ttl_and_errors(ctl: Ctl, cell: str) -> None:
    _session(ctl, cell)
    n = ["-n", cell]
    ok = ctl("comb", "set", "session/chat", "otp", "42", "--ttl", "1h", "-o", "json", *n)
    assert json.loads(ok.stdout) == {"key": "otp", "value": 42, "ttlSeconds": 3600.0}
    bad = ctl("comb", "set", "session/chat", "otp", "42", "--ttl", "soon", *n)
    assert bad.exit_code == 2 and "invalid duration" in bad.stderr
    nosession = ctl("comb", "get", "session/ghost", "k", *n)
    assert nosession.exit_code == 1 and "Session 'ghost' not found" in nosession.stderr
    wrong = ctl("comb", "keys", "hive/chat", *n)
    assert wrong.exit_code == 2 and "not a session" in wrong.stderr
    ctl("comb", "set", "session/chat", "word", "abc", *n)
    notnum = ctl("comb", "incr", "session/chat", "word", *n)
    assert notnum.exit_code == 1 and "not a number" in notnum.stderr


def test_memory_add_search_delete(ctl: Ctl, cell: str) -> None:
    n = ["-n", cell]
    first = ctl("memory", "add", "The user prefers tea over coffee", "--meta", "src=chat", *n)
    assert first.exit_code == 0, first
    tea = first.stdout.strip()
    ctl("memory", "add", "Tea, tea and more tea: green tea every morning", *n)
    ctl("memory", "add", "The build runs on Fridays", *n)
    table = ctl("memory", "search", "tea", *n).stdout.splitlines()
    assert table[0].split() == ["ID", "SCORE", "TEXT"]
    assert "green tea" in table[1] and tea in table[2] and len(table) == 3
    found = json.loads(ctl("memory", "search", "tea", "--limit", "1", "-o", "json", *n).stdout)
    assert len(found) == 1 and "green tea" in found[0]["text"]
    assert ctl("memory", "delete", tea, *n).stdout == f"memory {tea} deleted\n"
    assert ctl("memory", "search", "coffee", *n).stderr == "no memory matches\n"
    bad = ctl("memory", "add", "x", "--meta", "novalue", *n)
    assert bad.exit_code == 2 and "key=value" in bad.stderr
