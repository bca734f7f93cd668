"""Every stderr line of a real apiaryd and ``apiaryd node`` is a JSON object when stderr is not a
terminal, console text on a terminal; fields are keys (docs/observability.md, "Logs")."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import Apiaryd, _apiaryd, agentspec, hive, is_ready, new_cell, wait_drones

pytestmark = pytest.mark.slow


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no log line at all"
    out = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail(f"a stderr line is not JSON: {line!r}")
        assert isinstance(obj, dict) and {"event", "level", "timestamp"} <= obj.keys(), line
        out.append(obj)
    return out


def test_apiaryd_and_a_node_write_only_json_lines_when_not_a_tty(tmp_path: Path) -> None:
    server = Apiaryd(tmp_path / "data", ["--log-format", "json"])
    server.start()
    node_log = tmp_path / "node.log"
    cell = new_cell()
    try:
        with server.client(cell) as c:
            c.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell}})
            c.create(agentspec(cell, "echo"))
            c.create(hive(cell, "h", "echo", 1))
            wait_drones(c, cell, lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 30, "drone")
        with node_log.open("wb") as out:  # no --log-format: the default for a file
            node = subprocess.Popen(
                [*_apiaryd(), "node", "--server", server.url, "--token-file",
                 str(server.data_dir / "admin.token"), "--name", "jsonnode",
                 "--data-dir", str(tmp_path / "node")],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while "joined" not in node_log.read_text() and time.monotonic() < deadline:
                assert node.poll() is None, node_log.read_text()
                time.sleep(0.05)
        finally:
            node.terminate()
            node.wait(30)
    finally:
        server.stop()
    lines = json_lines(server.log.read_text())
    ready = [line for line in lines if "url" in line]
    assert ready and ready[0]["url"] == server.url and ready[0]["port"] > 0
    assert ready[0]["event"].startswith("apiaryd listening on ")
    assert ready[0]["data_dir"] == str(server.data_dir)
    joined = [line for line in json_lines(node_log.read_text()) if line.get("node") == "jsonnode"]
    assert joined and joined[0]["server"] == server.url


def test_the_default_is_json_for_a_file_and_console_for_a_terminal(tmp_path: Path) -> None:
    for tty in (False, True):
        data = tmp_path / f"tty-{tty}"
        primary, secondary = pty.openpty() if tty else (None, None)
        log = tmp_path / f"tty-{tty}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*_apiaryd(), "--data-dir", str(data), "--port", "0", "--no-local-node"],
                stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                stderr=secondary if secondary is not None else out,
            )  # fmt: skip
        text = ""
        try:
            deadline = time.monotonic() + 20
            while "listening on" not in text and time.monotonic() < deadline:
                assert proc.poll() is None, text
                if primary is not None:
                    os.set_blocking(primary, False)
                    try:
                        text += os.read(primary, 65536).decode(errors="replace")
                    except BlockingIOError:
                        pass
                else:
                    text = log.read_text()
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(30)
            for fd in (primary, secondary):
                if fd is not None:
                    os.close(fd)
        line = next(t for t in text.splitlines() if "listening on" in t)
        if tty:
            assert not line.lstrip().startswith("{") and "url=http://" in line, line
        else:
            assert json.loads(line)["url"].startswith("http://127.0.0.1:")


SCRIPT = """
import logging, io, json, sys
from apiary.logging import (add_field_source, bind_fields, configure_logging, get_logger,
                            reset_fields, set_fields)
buf = io.StringIO()
configure_logging(json=True, stream=buf)
add_field_source(lambda: {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"})
add_field_source(lambda: 1 / 0)  # a broken source loses nothing
logging.getLogger("apiary.router").warning("publish failed: %s", "boom",
                                           extra={"cell": "c1", "hive": "h1"})
bind_fields(session="s1")
get_logger("apiary.daemon").info("hello", cell="c2")
outer = set_fields({"cell": "c3", "hive": "h3"})
inner = set_fields({"stage": "s3"})
logging.getLogger("apiary.router").info("routed")
reset_fields(inner)
reset_fields(outer)
logging.getLogger("apiary.router").info("after")
sys.stdout.write(buf.getvalue())
"""


def test_fields_are_keys_from_extra_bindings_and_sources() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    first, second, third, fourth = json_lines(out)
    assert first["event"] == "publish failed: boom" and first["level"] == "warning"
    assert (first["cell"], first["hive"]) == ("c1", "h1")
    assert first["logger"] == "apiary.router"
    assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert (second["cell"], second["session"]) == ("c2", "s1")
    assert second["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert (third["cell"], third["hive"], third["stage"]) == ("c3", "h3", "s3")
    assert "hive" not in fourth and fourth["session"] == "s1"


UNCAUGHT = """
import threading, warnings
from apiary.logging import configure_logging
configure_logging(json=True)
warnings.warn("old API", DeprecationWarning, stacklevel=1)
t = threading.Thread(target=lambda: 1 / 0, name="worker-1")
t.start()
t.join()
raise RuntimeError("the end")
"""


def test_warnings_and_uncaught_tracebacks_are_json_lines_too() -> None:
    p = subprocess.run(
        [sys.executable, "-W", "always", "-c", UNCAUGHT], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert p.returncode == 1
    warned, thread, end = json_lines(p.stderr)
    assert warned["logger"] == "py.warnings" and "old API" in warned["event"]
    assert thread["in_thread"] == "worker-1" and "ZeroDivisionError" in thread["exception"]
    assert end["level"] == "critical" and "RuntimeError: the end" in end["exception"]
