"""Reading manifests: files, directories and stdin; multi-document YAML and JSON.

Each document is read on its own, so one bad document does not hide the others; every problem
names the file, the document's index (1-based) and, for syntax errors, the line. YAML is read
within :mod:`apiary.resources.yaml_bounds`, so a document whose aliases would expand it beyond
reason ("billion laughs") is one more bad document, not a CLI that hangs.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from apiary.resources import lookup_kind
from apiary.resources.yaml_bounds import load as load_yaml

EXTENSIONS = (".yaml", ".yml", ".json")
#: apply order inside one run: what others reference comes first
KIND_ORDER = {"Cell": 0, "Secret": 1, "AgentSpec": 2, "Hive": 3}
_SEPARATOR = re.compile(r"^---(?:[ \t].*)?$")


@dataclass
class Document:
    """One object from a manifest, or the reason it could not be read (``error``)."""

    source: str
    index: int
    line: int
    obj: dict[str, Any] | None = None
    error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source} document {self.index} (line {self.line})"

    @property
    def rank(self) -> int:
        kind = str((self.obj or {}).get("kind", ""))
        info = lookup_kind(kind)
        return KIND_ORDER.get(info.kind if info else kind, len(KIND_ORDER))


class ManifestError(Exception):
    """A path that cannot be read at all (missing file, directory without -R …)."""


def collect_files(paths: list[str], recursive: bool) -> list[str]:
    """Expand directories (sorted; subdirectories only with ``recursive``); ``-`` is stdin."""
    files: list[str] = []
    for raw in paths:
        if raw == "-":
            files.append(raw)
            continue
        p = Path(raw)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(
                f for f in p.glob(pattern) if f.is_file() and f.suffix.lower() in EXTENSIONS
            )
            if not found:
                raise ManifestError(f"{raw}: no .yaml, .yml or .json files in this directory")
            files.extend(str(f) for f in found)
        elif p.is_file():
            files.append(raw)
        else:
            raise ManifestError(f"{raw}: no such file or directory")
    return files


def read_documents(paths: list[str], recursive: bool = False) -> list[Document]:
    docs: list[Document] = []
    for f in collect_files(paths, recursive):
        if f == "-":
            docs.extend(parse_text(sys.stdin.read(), "<stdin>"))
            continue
        try:
            text = Path(f).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{f}: cannot read: {exc}") from exc
        docs.extend(parse_text(text, f, as_json=f.lower().endswith(".json")))
    return docs


def parse_text(text: str, source: str, as_json: bool = False) -> list[Document]:
    """Documents in ``text``; JSON when it says so (or starts with ``{``/``[``), YAML otherwise."""
    stripped = text.lstrip()
    if as_json or stripped.startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as exc:
            if as_json:
                line = getattr(exc, "lineno", 1)
                return [Document(source, 1, line, error=f"invalid JSON: {exc}")]
        else:
            return _expand(data, source, 1, 1)
    docs: list[Document] = []
    index = 0
    for start, chunk in _split_yaml(text):
        if not chunk.strip() or all(
            not ln.strip() or ln.lstrip().startswith("#") for ln in chunk.splitlines()
        ):
            continue
        index += 1
        try:
            data = load_yaml(chunk)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            last = max(0, len(chunk.rstrip().splitlines()) - 1)
            line = start + min(mark.line if mark is not None else 0, last)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            docs.append(
                Document(source, index, start, error=f"invalid YAML at line {line}: {problem}")
            )
            continue
        if data is None:
            index -= 1
            continue
        docs.extend(_expand(data, source, index, start))
    return docs


def _split_yaml(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each ``---``-separated document."""
    chunks: list[tuple[int, str]] = []
    start, buf = 1, list[str]()
    for n, line in enumerate(text.splitlines(keepends=True), start=1):
        if _SEPARATOR.match(line.rstrip("\r\n")):
            chunks.append((start, "".join(buf)))
            start, buf = n + 1, []
        else:
            buf.append(line)
    chunks.append((start, "".join(buf)))
    return chunks


def _expand(data: Any, source: str, index: int, line: int) -> list[Document]:
    """One document, or each item of a JSON array / ``kind: List`` (``-o yaml`` output)."""
    if isinstance(data, list):
        return [d for item in data for d in _expand(item, source, index, line)]
    if not isinstance(data, dict):
        got = type(data).__name__
        return [Document(source, index, line, error=f"must be a mapping (object), got {got}")]
    kind = data.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(data.get("items"), list):
        return [d for item in data["items"] for d in _expand(item, source, index, line)]
    return [Document(source, index, line, obj=data)]


def apply_order(docs: list[Document]) -> list[Document]:
    """Cells, Secrets, AgentSpecs, Hives, then the rest; file order within a kind (stable)."""
    return sorted(docs, key=lambda d: d.rank)
