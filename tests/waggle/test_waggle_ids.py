"""``new_id``: a per-process random prefix plus a counter — UUID4-shaped, unique across processes,
forks and restarts, and cheap enough for every message (no system call per id)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from apiary.waggle import new_id

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ONE_ID = [sys.executable, "-c", "from apiary.waggle import new_id; print(new_id())"]


def test_ids_are_uuid4_shaped_and_distinct() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids) and all(UUID4.match(i) for i in ids)


def test_another_process_draws_another_prefix() -> None:
    mine = new_id()
    others = [subprocess.run(ONE_ID, capture_output=True, text=True, check=True).stdout.strip()
              for _ in range(2)]  # fmt: skip
    prefixes = {i[:24] for i in [mine, *others]}
    assert len(prefixes) == 3 and all(UUID4.match(i) for i in others)


def test_a_forked_child_does_not_repeat_the_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave without running pytest's teardown
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = new_id()
    assert UUID4.match(child) and child[:24] != parent[:24]
