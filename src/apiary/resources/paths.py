"""Field paths as users read them: ``spec.stages[1].agentRef``, ``metadata.labels["a/b"]``."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

_PLAIN = re.compile(r"^[A-Za-z0-9_$-]+$")


def render_path(loc: Sequence[str | int]) -> str:
    """Join a location: names with dots, list indexes in brackets, odd keys quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(str(part))}]"
    return out
