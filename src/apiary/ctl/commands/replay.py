"""``apiaryctl session replay SESSION [--hive HIVE] [--mode recorded|live|mixed]``.

Re-runs a session's inputs through a hive — typically a new version of the session's own — in a
new session whose ``spec.replay`` names the original: the gateway answers its LLM calls from the
original's recorded calls (``recorded``: only those, an unmatched call is an error naming the
field that differs; ``mixed``: the provider for the unmatched ones only; ``live``: always the
provider). Then it prints, stage by stage, whether the output is the same, the tokens and their
estimated cost before and after, and the final answers side by side (docs/gateway.md, "Record
and replay").
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Annotated, Any

import typer

from apiary.ctl import output
from apiary.ctl.commands.session import SessionCalls, calls, usd
from apiary.ctl.context import get_ctl

Obj = dict[str, Any]
ENDED = ("final", "error")


def _entries(transcript: Obj) -> list[Obj]:
    return [e for e in transcript.get("items") or [] if isinstance(e, dict)]


def _payload(entry: Obj) -> Any:
    return (entry.get("message") or {}).get("payload")


def _tokens(entry: Obj) -> int:
    usage = entry.get("usage") or {}
    return int(usage.get("promptTokens") or 0) + int(usage.get("completionTokens") or 0)


def _cost(entry: Obj) -> float:
    cost = entry.get("costUsd")
    return float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else 0.0


def _by_stage(entries: list[Obj]) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for e in entries:
        if e.get("kind") in ("output", "error") and e.get("stage"):
            out.setdefault(str(e["stage"]), []).append(e)
    return out


def _wait(api: SessionCalls, name: str, ends: int, timeout: float) -> Obj:
    deadline = time.monotonic() + timeout
    while True:
        transcript = api.transcript(name)
        done = [e for e in _entries(transcript) if e.get("kind") in ENDED]
        if len(done) >= ends:
            return transcript
        if time.monotonic() > deadline:
            raise typer.BadParameter(
                f"session {name} gave {len(done)} of {ends} answers within {timeout:g}s",
                param_hint="--timeout",
            )
        time.sleep(0.2)


def diff_rows(before: list[Obj], after: list[Obj]) -> list[tuple[str, str, int, int, float, float]]:
    """Per stage: same or changed output, tokens before and after, estimated USD before and
    after (0 where no model had a price)."""
    old, new = _by_stage(before), _by_stage(after)
    rows = []
    for stage in [*old, *(s for s in new if s not in old)]:
        a, b = old.get(stage, []), new.get(stage, [])
        same = [_payload(x) for x in a] == [_payload(x) for x in b]
        rows.append((stage, "same" if same else "changed", sum(map(_tokens, a)),
                     sum(map(_tokens, b)), sum(map(_cost, a)), sum(map(_cost, b))))  # fmt: skip
    return rows


def _stage_json(row: tuple[str, str, int, int, float, float]) -> Obj:
    stage, what, tokens_a, tokens_b, cost_a, cost_b = row
    out: Obj = {"stage": stage, "output": what, "tokensBefore": tokens_a, "tokensAfter": tokens_b}
    if cost_a or cost_b:  # as the transcript: no cost field where nothing was priced
        out.update(costUsdBefore=round(cost_a, 9), costUsdAfter=round(cost_b, 9))
    return out


def replay_command(
    source: Annotated[str, typer.Argument(help="The recorded session.")],
    hive: Annotated[
        str | None, typer.Option("--hive", help="Hive to re-run through (default: its own).")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="recorded, live or mixed.")] = "recorded",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")] = 120.0,
) -> None:
    """Re-run a session's inputs through a hive and diff the two transcripts."""
    if mode not in ("recorded", "live", "mixed"):
        raise typer.BadParameter("expected recorded, live or mixed", param_hint="--mode")
    ctl = get_ctl()
    api = calls(ctl)
    name = source.rpartition("/")[2]
    original = api.get(name)
    target = hive or str((original.get("spec") or {}).get("hiveRef"))
    before = _entries(api.transcript(name))
    inputs = [_payload(e) for e in before if e.get("kind") == "input"]
    ends = sum(1 for e in before if e.get("kind") in ENDED)
    replay = f"{name}-replay-{secrets.token_hex(3)}"[:63]
    body = {"kind": "Session", "metadata": {"name": replay},
            "spec": {"hiveRef": target, "replay": {"session": name, "mode": mode}}}  # fmt: skip
    api.client.request("POST", f"{api.base}/sessions", json_body=body)
    for payload in inputs:
        api.send(replay, payload)
    after = _entries(_wait(api, replay, ends, timeout))
    rows = diff_rows(before, after)
    finals = [[json.dumps(_payload(e), sort_keys=True) for e in entries if e.get("kind") in ENDED]
              for entries in (before, after)]  # fmt: skip
    result = {"session": replay, "hive": target, "mode": mode, "sameFinal": finals[0] == finals[1],
              "stages": [_stage_json(r) for r in rows]}  # fmt: skip
    if ctl.output == "json":
        output.out(output.dump_json(result))
        return
    output.out(f"session/{replay} replayed {name} through hive/{target} ({mode})")
    output.out(f"{'STAGE':<20} {'OUTPUT':<8} {'TOKENS BEFORE':>13} {'TOKENS AFTER':>12}"
               f" {'COST BEFORE':>12} {'COST AFTER':>12}")  # fmt: skip
    for stage, what, a, b, cost_a, cost_b in rows:
        output.out(f"{stage:<20} {what:<8} {a:>13} {b:>12} {usd(cost_a):>12} {usd(cost_b):>12}")
    for old, new in zip(finals[0], finals[1], strict=False):
        mark = "=" if old == new else "≠"
        output.out(f"final {mark} before: {old[:70]}")
        if old != new:
            output.out(f"        after:  {new[:70]}")


def register(session_app: typer.Typer) -> None:
    session_app.command("replay")(replay_command)


__all__ = ["diff_rows", "register", "replay_command"]
