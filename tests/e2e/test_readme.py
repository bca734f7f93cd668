"""The README's quick start, literally (issue 13 acceptance): every command of its ```sh blocks, in
order, on a fresh data dir and a non-default port, each output asserted — then every seed hive of
the runnable set answers, and nothing is left stuck behind the seed Cell's quota.

``make run`` runs as written but for ``-o <venv>/.installed`` (the venv this test runs in is
installed; make must not reinstall it), and stops with a Ctrl-C (SIGINT to its process group).
``make test`` is this suite: it is checked to be there, not run. The export line is evaluated by
bash with the README's port and data dir replaced by the test's; ``<session>`` is the session
that the ``run`` line before it printed on stderr (a terminal there, as for a person typing it).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services import free_port

from .cluster import REPO, wait_for

pytestmark = pytest.mark.slow
README = REPO / "README.md"
VENV = Path(sys.executable).parent.parent


def quick_start() -> list[list[str]]:
    """The command lines of each ```sh block of the README's Quick start (comments kept)."""
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [[ln for ln in b.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            for b in blocks]  # fmt: skip


def split_comment(line: str) -> tuple[str, str]:
    """``command  # comment`` → (command, comment); a ``#`` inside quotes is the command's."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def expected(comment: str) -> str | None:
    """``→ Echo: HELLO BEES (session/… on stderr)`` → ``Echo: HELLO BEES``; ``…`` ends a prefix."""
    if not comment.startswith("→"):
        return None
    return re.split(r" \(|…", comment[1:].strip(), maxsplit=1)[0].strip()


@dataclass
class Out:
    rc: int
    stdout: str
    stderr: str


class Shell:
    """Runs README lines with bash in the repository, in the environment of its export line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.transcript: list[str] = []

    def __call__(self, command: str, timeout: float = 90, tty_stderr: bool = False) -> Out:
        argv = ["bash", "-c", command]
        if not tty_stderr:
            p = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, text=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
            out = Out(p.returncode, p.stdout, p.stderr)
        else:
            out = self._with_tty_stderr(argv, timeout)
        self.transcript.append(f"$ {command}\n[{out.rc}]\n{out.stdout}{out.stderr}")
        return out

    def _with_tty_stderr(self, argv: list[str], timeout: float) -> Out:
        master, slave = pty.openpty()
        proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                                stderr=slave, stdin=subprocess.DEVNULL)  # fmt: skip
        os.close(slave)
        err = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the other end closed: the command is done
                    break
                if not chunk:
                    break
                err += chunk
            elif proc.poll() is not None:
                break
        os.close(master)
        stdout = proc.stdout.read().decode() if proc.stdout else ""
        rc = proc.wait(max(1.0, deadline - time.monotonic()))
        return Out(rc, stdout, err.decode(errors="replace"))

    def ctl(self, args: str, timeout: float = 90) -> Out:
        return self(f"apiaryctl {args}", timeout)

    def json(self, args: str) -> Any:
        out = self.ctl(f"{args} -o json")
        assert out.rc == 0, out
        return json.loads(out.stdout)


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[list[str], dict[str, str], subprocess.Popen[bytes]]]:
    first, _ = quick_start()
    commands = [split_comment(ln)[0] for ln in first]
    assert commands == ["make run", "make test"], commands
    port = free_port()
    assert port != 8080
    data = tmp_path / "data"
    env = {**os.environ, "APIARY_PORT": str(port), "APIARY_DATA_DIR": str(data),
           "VENV": str(VENV)}  # fmt: skip
    for key in ("APIARY_SERVER", "APIARY_TOKEN", "APIARY_CELL", "APIARY_CONTEXT"):
        env.pop(key, None)
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["make", "--no-print-directory", "-o", f"{VENV}/.installed", "run"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: "Ctrl-C stops it." in log.read_text() or proc.poll() is not None,
                  40, "make run to apply the quick start")  # fmt: skip
        printed = log.read_text()
        assert proc.poll() is None, printed
        assert "hive/quickstart created" in printed or "quickstart" in printed, printed
        yield printed.splitlines(), {"port": str(port), "data": str(data)}, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def test_the_readme_quick_start_runs_as_written(
    make_run: tuple[list[str], dict[str, str], subprocess.Popen[bytes]],
) -> None:
    printed, where, proc = make_run
    _, second = quick_start()
    lines = [split_comment(ln) for ln in second]
    export, _ = lines[0]
    assert export.startswith("export APIARY_SERVER=http://127.0.0.1:8080 "), export
    assert any(ln.strip().startswith("export APIARY_SERVER=") for ln in printed), printed
    mine = export.replace("127.0.0.1:8080", f"127.0.0.1:{where['port']}").replace(
        "$PWD/data", where["data"]
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    got = subprocess.run(["bash", "-c", f"{mine} && env -0"], cwd=REPO, env=base,
                         capture_output=True, check=True)  # fmt: skip
    env = dict(kv.split("=", 1) for kv in got.stdout.decode().split("\0") if "=" in kv)
    sh = Shell(env)
    session: str | None = None
    try:
        for command, comment in lines[1:]:
            want = expected(comment)
            if command.startswith("apiaryctl run ") and "hive/quickstart" in command:
                out = sh(command, tty_stderr=True)
                assert out.rc == 0, out
                assert out.stdout.strip() == want, out
                found = re.search(r"session/(\S+)", out.stderr)
                assert found, out.stderr
                session = found.group(1)
                continue
            if "<session>" in command:
                assert session, "the run line comes first"
                command = command.replace("<session>", session)
            out = sh(command)
            assert out.rc == 0, out
            check_line(command, want, out)
        seed_hives_answer(sh)
        nothing_left_stuck(sh)
    except BaseException:
        print("\n".join(sh.transcript[-12:]))
        raise
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(30)
    assert proc.returncode is not None


def check_line(command: str, want: str | None, out: Out) -> None:
    text = out.stdout
    if command == "apiaryctl get hives":
        assert re.search(r"^quickstart\s", text, re.M), text
    elif command == "apiaryctl get drones -o wide":
        assert len(re.findall(r"^quickstart-shout-", text, re.M)) == 2, text
        assert len(re.findall(r"^quickstart-echo-", text, re.M)) == 1, text
    elif command.startswith("apiaryctl session transcript"):
        assert "shout" in text and "echo" in text and "HELLO BEES" in text, text
    elif command.startswith("apiaryctl scale"):
        assert "hive/quickstart" in text and "4" in text, text
    elif command == "apiaryctl apply -f examples/seed-manifests/":
        for obj in ("cell/default", "secret/api-key-secret", "agentspec/echo-agent",
                    "agentspec/llm-agent", "hive/pipeline-hive", "hive/hierarchical-hive",
                    "hive/swarm-hive", "hive/event-driven-hive", "hive/composed-hive"):  # fmt: skip
            assert obj in text, text
    elif command == "apiaryctl apply -f examples/seeds/":
        assert "cell/seeds" in text and text.count(" created") >= 9, text
    elif command.startswith("apiaryctl explain"):
        assert "agentRef" in text, text
    elif command.startswith("source <("):
        assert out.stderr == "", out
    if want is not None:
        if want.startswith("{"):  # JSON, printed indented: compare it on one line
            text = json.dumps(json.loads(text), ensure_ascii=False)
        assert text.strip().startswith(want), (command, want, text)


SEED_ANSWERS = {
    "pipeline-hive": (
        "hello",
        lambda out: json.loads(out.removeprefix("Echo: "))["response"] == "LLM(Echo: hello)",
    ),
    "hierarchical-hive": ("plan a trip", lambda out: "worker1: Echo: plan a trip; worker2" in out),
    "swarm-hive": ("q", lambda out: json.loads(out)[1]["payload"]["response"] == "LLM(q)"),
    "composed-hive": ("go", lambda out: "Echo: Echo: " in out and "LLM(" in out),
}


def seed_hives_answer(sh: Shell) -> None:
    """After the scale step and both applies, every seed hive of the runnable set answers, and so
    does the quick start at its new size (the runs go side by side: each is an apiaryctl start
    and a session of its own hive)."""
    runs = {hive: f'-n seeds run hive/{hive} --input "{text}" --timeout 30s'
            for hive, (text, _) in SEED_ANSWERS.items()}  # fmt: skip
    runs["event-driven-hive"] = "-n seeds run hive/event-driven-hive --input ping --timeout 30s"
    runs["quickstart"] = 'run hive/quickstart --input "again" --timeout 30s'
    with ThreadPoolExecutor(len(runs)) as pool:
        outs = dict(zip(runs, pool.map(lambda args: sh.ctl(args, 45), runs.values()), strict=True))
    for hive, (_, good) in SEED_ANSWERS.items():
        out = outs[hive]
        assert out.rc == 0 and good(out.stdout.strip()), (hive, out)
    out = outs["event-driven-hive"]
    assert out.rc == 0 and "subscriber" in out.stdout, out
    out = outs["quickstart"]
    assert out.rc == 0 and out.stdout.strip() == "Echo: AGAIN", out


def nothing_left_stuck(sh: Shell) -> None:
    """Every hive of Cell seeds reaches Ready; the quick start runs its four shouters; both Cells
    report what they use."""

    def seeds_ready() -> bool:
        hives = sh.json("-n seeds get hives")["items"]
        return len(hives) == 5 and all(
            (h.get("status") or {}).get("readyReplicas") == (h.get("status") or {}).get("replicas")
            for h in hives
        )

    wait_for(seeds_ready, 30, "every seed hive of Cell seeds ready")
    quick = sh.json("get hive quickstart")
    assert quick["status"]["readyReplicas"] == quick["status"]["replicas"] == 5, quick["status"]
    for cell in ("default", "seeds"):
        used = wait_for(lambda c=cell: (sh.json(f"get cell {c}").get("status") or {}).get("used"),
                         15, f"cell {cell} status.used")  # fmt: skip
        assert 0 < used["maxCPU"] <= 1000, used
    described = sh.ctl("describe cell seeds")
    assert re.search(r"maxHives\s+5\s+50", described.stdout), described.stdout
