"""``apiaryctl run hive/NAME --input TEXT | --input-file F | -``: one input in, its answer out.

Without ``--session`` the input runs as a job (a one-input session that ends itself); with it,
the input joins that conversation. Either way the message gets an id chosen here, and ``run``
long-polls the session for the entry that ends *that* input — the ``final`` whose parent it is,
or the ``error`` correlated to it — so other traffic in a shared session never confuses it.
The answer's payload goes to stdout (a string as is, anything else as JSON); a failure or a
timeout is one ``error:`` line on stderr and exit 1. On a terminal a spinner names the stage at
work; nothing but the answer is ever written to stdout.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.status import Status

from apiary import errors
from apiary.ctl import output
from apiary.ctl.commands.session import SessionCalls, calls, hive_name, parse_input
from apiary.ctl.context import Ctl, get_ctl
from apiary.ctl.diagnose import why_waiting
from apiary.ctl.durations import parse_duration
from apiary.waggle import new_id

Obj = dict[str, Any]

POLL_SECONDS = 5.0
"""Longest single long-poll; between two, the session's phase is checked (dead letters) and
why the hive is not answering (:mod:`apiary.ctl.diagnose`)."""
FIRST_POLL_SECONDS = 1.0
"""The first poll: an answer still comes back at once, and a hive that cannot answer is
diagnosed after a second rather than five."""


def read_input(text: str | None, file: Path | None, dash: str | None) -> str:
    """Exactly one source: ``--input``, ``--input-file`` (``-`` = stdin) or a ``-`` argument."""
    given = [s for s in (text is not None, file is not None, dash is not None) if s]
    if dash is not None and dash != "-":
        raise typer.BadParameter(f"unexpected argument {dash!r} (use - for stdin)")
    if len(given) != 1:
        raise typer.BadParameter("give exactly one of --input TEXT, --input-file FILE or -")
    if text is not None:
        return text
    if file is None or str(file) == "-":
        data = sys.stdin.read()
    else:
        try:
            data = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise typer.BadParameter(f"{file}: {exc.strerror}", param_hint="--input-file") from None
        except UnicodeDecodeError:
            raise typer.BadParameter(f"{file}: not UTF-8 text", param_hint="--input-file") from None
    return data[:-1] if data.endswith("\n") else data


class Progress:
    """What ``run`` knows while it waits: the stage at work and, when the hive cannot answer,
    why (:mod:`apiary.ctl.diagnose`). A spinner on stderr shows it — only on a terminal."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.current: str | None = None
        """The stage the input was last dispatched to."""
        self.reason: str | None = None
        """Why the hive is not answering, as last diagnosed (None: it is at work)."""
        con = output.err_console()
        self.status: Status | None = (
            con.status(escape(f"waiting for {what}…")) if con.is_terminal else None
        )

    def __enter__(self) -> Progress:
        if self.status is not None:
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def _show(self, text: str) -> None:
        if self.status is not None:
            self.status.update(escape(f"{self.what}: {text}"))

    def stage(self, stage: str) -> None:
        self.current = stage
        self.reason = None
        self._show(f"stage {stage} working…")

    def retrying(self, stage: str, failure: Any) -> None:
        why = failure.get("reason") if isinstance(failure, dict) else failure
        self._show(f"stage {stage} failed ({why}), retrying…")

    def waiting(self, reason: str | None) -> None:
        """The diagnosis after a poll without the answer; None: the hive is at work."""
        self.reason = reason
        if reason is not None:
            self._show(reason)
        elif self.current is not None:
            self._show(f"stage {self.current} working…")


Diagnosis = Callable[[str | None, Obj], str | None]
"""(stage at work or None, the session object) → why the hive is not answering, or None."""


OPEN_PHASES = frozenset({"", "Pending", "Running", "WaitingForApproval"})


def wait_for_answer(
    api: SessionCalls,
    session: str,
    input_id: str,
    deadline: float,
    progress: Progress,
    diagnose: Diagnosis | None = None,
) -> Obj | None:
    """The entry that ends ``input_id`` (final or error), or None when ``deadline`` passes.

    A dispatch that used up its retries is dead-lettered without an error entry (a replay may
    still finish it); the session's phase says so, so it is checked whenever a poll comes back
    without the answer — and then ``diagnose`` says why the hive is not answering (a crashing
    agent, drones held by a quota, an approval gate …) for the spinner. The first poll is
    short, so that shows within a second."""
    after = 0
    window = FIRST_POLL_SECONDS
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        body = api.poll(session, after, min(remaining, window))
        window = POLL_SECONDS
        for e in body.get("items") or []:
            message = e.get("message") or {}
            kind = e.get("kind")
            mine = e.get("parent") == input_id or message.get("correlationId") == input_id
            if mine and kind in ("final", "error"):
                return dict(e)
            if mine and kind == "dispatch" and e.get("stage"):
                progress.stage(str(e["stage"]))
            elif kind == "event" and message.get("type") == "error" and e.get("stage"):
                progress.retrying(str(e["stage"]), message.get("payload"))
        after = int(body.get("last") or after)
        current = api.get(session)
        ended = _ended(current)
        if ended is not None:
            return ended
        if diagnose is not None:
            progress.waiting(diagnose(progress.current, current))


def _ended(obj: Obj) -> Obj | None:
    """An error entry standing for a session that ended without answering (dead letter, close,
    expiry)."""
    status = obj.get("status") or {}
    phase = str(status.get("phase") or "")
    if phase in OPEN_PHASES or phase == "Succeeded":
        return None
    reason = status.get("reason") or phase
    text = status.get("message") or f"the session is {phase}"
    return {
        "kind": "error",
        "message": {"type": "error", "payload": {"reason": reason, "message": text}},
    }


def print_payload(payload: Any) -> None:
    output.out(payload if isinstance(payload, str) else output.dump_json(payload))


def run_command(
    target: Annotated[str, typer.Argument(help="hive/NAME to run.")],
    dash: Annotated[str | None, typer.Argument(help="- to read the input from stdin.")] = None,
    input_: Annotated[str | None, typer.Option("--input", "-i", help="The input text.")] = None,
    input_file: Annotated[
        Path | None,
        typer.Option("--input-file", "-f", help="Read the input from a file (- stdin)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Parse the input as JSON.")] = False,
    session: Annotated[
        str | None, typer.Option("--session", help="Send into this session (else a new job).")
    ] = None,
    timeout: Annotated[str, typer.Option("--timeout", help="Give up after (60s, 5m).")] = "60s",
) -> None:
    """Send one input to a hive and print its final output (exit 1 on failure or timeout)."""
    ctl = get_ctl()
    hive = hive_name(target)
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--timeout'") from None
    payload = parse_input(read_input(input_, input_file, dash), as_json)
    deadline = time.monotonic() + seconds
    api = calls(ctl)
    input_id = new_id()
    if session is not None:
        current = api.get(session)
        runs = (current.get("spec") or {}).get("hiveRef")
        if runs != hive:
            raise errors.Conflict(f"session {session!r} talks to hive/{runs}, not hive/{hive}")
        api.send(session, payload, id=input_id)
        name = session
    else:
        name = str(api.job(hive, payload, id=input_id)["id"])
    con = output.err_console()
    if con.is_terminal:
        output.info(f"session/{name}")

    def diagnose(stage: str | None, current: Obj) -> str | None:
        return why_waiting(ctl.client(), ctl.cell, hive, stage, current)

    with Progress(f"hive/{hive}") as progress:
        try:
            answer = wait_for_answer(api, name, input_id, deadline, progress, diagnose)
        except errors.Unavailable as exc:
            if "timed out" not in exc.message.lower():
                raise
            answer = None
    if answer is None:
        why = _last_word(ctl, api, hive, name, progress)
        output.error(
            f"timed out after {timeout} waiting for hive/{hive} (session {name})"
            + (f": {why}" if why else "")
        )
        raise typer.Exit(output.EXIT_FAILED)
    message = answer.get("message") or {}
    if answer.get("kind") == "error":
        err = message.get("payload")
        why = f"{err.get('reason')}: {err.get('message')}" if isinstance(err, dict) else str(err)
        output.error(f"hive/{hive} failed (session {name}): {why}")
        raise typer.Exit(output.EXIT_FAILED)
    if ctl.output in ("json", "yaml"):
        out = {"session": name, "input": input_id, **answer}
        output.out(output.dump_json(out) if ctl.output == "json" else output.dump_yaml(out))
    else:
        print_payload(message.get("payload"))


def _last_word(ctl: Ctl, api: SessionCalls, hive: str, session: str, progress: Progress) -> str:
    """Why the hive did not answer in time, asked once more at the timeout (the last diagnosis
    if the server does not answer now); ``stage S was working`` when nothing seemed wrong."""
    try:
        why = why_waiting(ctl.client(), ctl.cell, hive, progress.current, api.get(session))
    except errors.ApiaryError:
        why = progress.reason
    if why is None and progress.current is not None:
        return f"stage {progress.current} was still working"
    return why or ""


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
