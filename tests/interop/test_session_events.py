"""Point 4 of issue 16: typed session events over SSE, resumable with ``Last-Event-ID`` from the
journal — across a restart of apiaryd on the same (embedded SQLite) data dir.

A real apiaryd, its node and real agent processes: a two-stage pipeline whose first agent streams
partial lines and reports tokens, whose second stage waits for a human's approval.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from e2e.cluster import Apiaryd, new_cell

from .kit import deploy, hive, read_sse

pytestmark = pytest.mark.slow


def test_typed_events_resume_with_last_event_id_across_a_restart(tmp_path: Path) -> None:
    server = Apiaryd(tmp_path / "data").start()
    try:
        cell = new_cell()
        deploy(server, cell, [hive(cell, "h", gated=True)])
        base = f"/api/v1/cells/{cell}/sessions"
        with server.client(cell) as c:
            c.create({"apiVersion": "apiary.io/v1", "kind": "Session",
                      "metadata": {"name": "s", "namespace": cell},
                      "spec": {"hiveRef": "h", "input": "hello world"}})  # fmt: skip
        stream = f"{base}/s/stream?events=typed"
        before = read_sse(server.url + stream, server.token,
                          lambda kind, _: kind == "approval.requested")  # fmt: skip
        kinds = [k for _, k, _ in before]
        assert kinds == ["session.input", "stage.started", "message.delta", "message.delta",
                         "stage.completed", "budget.updated", "stage.started",
                         "approval.requested"]  # fmt: skip
        deltas = [d for _, k, d in before if k == "message.delta"]
        assert [d["payload"] for d in deltas] == ["hello", " world"]
        assert all(d["metadata"]["partial"] == "true" and d["stage"] == "draft" for d in deltas)
        budget = before[5][2]
        assert budget["total"] == {"promptTokens": 3, "completionTokens": 5}
        assert before[6][2]["stage"] == before[7][2]["stage"] == "review"
        assert before[7][2]["dispatch"] == before[6][2]["dispatch"]  # that dispatch is held
        last = before[-1][0]

        server.stop()
        server.start()  # the same data dir: the journal is all that remembers the stream
        with server.client(cell) as c:
            r = c.request("POST", f"{base}/s/approve")
            assert r.body["released"] == 1
        done = lambda kind, _: kind == "session.completed"  # noqa: E731
        after = read_sse(server.url + stream, server.token, done, last_event_id=last)
        assert [k for _, k, _ in after] == [
            "approval.granted",
            "stage.completed",
            "session.completed",
        ]
        assert after[-1][2]["payload"] == "ok: draft: hello world"

        # nothing lost, nothing repeated: the two halves are exactly the whole stream
        whole = read_sse(server.url + stream, server.token,
                         lambda kind, _: kind == "session.completed")  # fmt: skip
        assert [e[0] for e in before + after] == [e[0] for e in whole]
        # an id inside one entry's events resumes inside it (budget.updated shares its entry)
        seq, index = before[4][0].split(".")
        assert before[5][0] == f"{seq}.{int(index) + 1}"
        mid = read_sse(server.url + stream, server.token, lambda *_: True,
                       last_event_id=before[4][0])  # fmt: skip
        assert mid[0][:2] == (before[5][0], "budget.updated")
        assert mid[0][2]["total"] == budget["total"]  # totals are rebuilt from the journal
        # the raw stream is unchanged: one event per entry, id the seq
        raw = read_sse(server.url + f"{base}/s/stream", server.token,
                       lambda kind, _: kind == "final")  # fmt: skip
        assert [k for _, k, _ in raw][:2] == ["input", "dispatch"]
        assert all(i.isdigit() for i, _, _ in raw)
        bad = httpx.get(server.url + stream, headers={"Authorization": f"Bearer {server.token}",
                                                      "Last-Event-ID": "x.y"})  # fmt: skip
        assert bad.status_code == 400 and "Last-Event-ID" in bad.json()["message"]
    finally:
        server.stop()
