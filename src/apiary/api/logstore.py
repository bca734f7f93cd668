"""The API's copy of every drone's log (see :mod:`apiary.api.logs`): batches a node pushes are
appended once per source and position, to the same rotating files the node writes."""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from apiary.node.logs import LogLine, LogWriter, drone_log_path
from apiary.store import Store


class LogStore:
    """The API's copy of every drone's log: appends (deduplicated per source) and paths."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_open: int = 256,
        gone_poll_seconds: float = 1.0,
        poll_interval: float = 0.1,
        retention_seconds: float = 3600.0,
        prune_interval: float = 600.0,
    ) -> None:
        self.root = Path(root)
        self.max_open = max_open
        self.gone_poll_seconds = gone_poll_seconds
        """How often a follow checks that its drone/hive still exists."""
        self.poll_interval = poll_interval
        self.retention_seconds = retention_seconds
        """Logs of a deleted drone are kept this long after their last line."""
        self.prune_interval = prune_interval
        self._writers: OrderedDict[tuple[str, str], tuple[LogWriter, list[float]]] = OrderedDict()
        self._cursors: dict[tuple[str, str], dict[str, Any]] = {}
        self._last_prune = time.monotonic()

    def path(self, cell: str, drone: str) -> Path:
        return drone_log_path(self.root, cell, drone)

    def append(
        self, cell: str, drone: str, uid: str | None, source: str | None, seq: int | None,
        lines: list[LogLine],
    ) -> tuple[int, int | None]:  # fmt: skip
        """Write the lines not yet written for (uid, source); (lines written, next seq)."""
        cursor = self._cursor(cell, drone)
        if uid and cursor.get("uid") != uid:
            cursor.clear()
            cursor.update(uid=uid, next={})
        nexts: dict[str, int] = cursor.setdefault("next", {})
        unseen, following = lines, None
        if source is not None and seq is not None:
            expected = int(nexts.get(source, 0))
            unseen = lines[max(0, min(expected - seq, len(lines))) :]
            following = max(expected, seq + len(lines))
        self._write(cell, drone, unseen)
        if following is not None and source is not None:
            nexts[source] = following
            self._save_cursor(cell, drone, cursor)
        return len(unseen), following

    def _write(self, cell: str, drone: str, lines: list[LogLine]) -> None:
        if not lines:
            return
        key = (cell, drone)
        entry = self._writers.pop(key, None)
        if entry is None:
            stamp = [0.0]
            entry = (LogWriter(self.path(cell, drone), clock=lambda: stamp[0]), stamp)
            while len(self._writers) >= self.max_open:
                self._writers.popitem(last=False)[1][0].close()
        self._writers[key] = entry
        writer, stamp = entry
        i = 0
        while i < len(lines):  # one write per run of lines sharing time and stream
            j = i + 1
            while j < len(lines) and (lines[j].time, lines[j].stream) == (
                lines[i].time,
                lines[i].stream,
            ):
                j += 1
            stamp[0] = lines[i].time.timestamp()
            writer.write_lines(lines[i].stream, [ln.text for ln in lines[i:j]])
            i = j

    def _cursor_path(self, cell: str, drone: str) -> Path:
        return self.root / cell / f"{drone}.cursor"

    def _cursor(self, cell: str, drone: str) -> dict[str, Any]:
        found = self._cursors.get((cell, drone))
        if found is None:
            try:
                found = json.loads(self._cursor_path(cell, drone).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                found = None
            if not isinstance(found, dict) or not isinstance(found.get("next"), dict):
                found = {"uid": None, "next": {}}
            self._cursors[(cell, drone)] = found
        return found

    def _save_cursor(self, cell: str, drone: str, cursor: dict[str, Any]) -> None:
        path = self._cursor_path(cell, drone)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(cursor), encoding="utf-8")
        os.replace(tmp, path)

    async def prune_if_due(self, store: Store) -> None:
        """Delete the logs of drones that no longer exist (after ``retention_seconds``)."""
        if time.monotonic() - self._last_prune < self.prune_interval:
            return
        self._last_prune = time.monotonic()
        cutoff = time.time() - self.retention_seconds
        for cell_dir in (
            [d for d in self.root.iterdir() if d.is_dir()] if self.root.is_dir() else []
        ):
            live = {o["metadata"]["name"] for o in (await store.list("Drone", cell_dir.name)).items}
            for file in cell_dir.glob("*.log"):
                name = file.name[: -len(".log")]
                if name in live or file.stat().st_mtime > cutoff:
                    continue
                entry = self._writers.pop((cell_dir.name, name), None)
                if entry is not None:
                    entry[0].close()
                self._cursors.pop((cell_dir.name, name), None)
                stale = [file, *cell_dir.glob(f"{name}.log.*")]
                for old in [*stale, self._cursor_path(cell_dir.name, name)]:
                    old.unlink(missing_ok=True)
