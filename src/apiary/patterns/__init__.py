"""The pattern engine: pipeline, hierarchical, swarm, event-driven and composed hives.

Pure: no I/O, no asyncio, no store or bus. Given a Hive, a session's state document and what
just happened (an input, a dispatch's outcome) it returns the new state and what to do — the
router (``apiary.router``) journals that and publishes the dispatches. See docs/patterns.md.
"""

from __future__ import annotations

from apiary.patterns.engine import PATTERN_TYPES, Engine
from apiary.patterns.ids import make_id
from apiary.patterns.layout import Segment, StageInfo, layout
from apiary.patterns.state import STATE_VERSION, initial_state
from apiary.patterns.step import Dispatch, Record, Step

__all__ = [
    "PATTERN_TYPES",
    "STATE_VERSION",
    "Dispatch",
    "Engine",
    "Record",
    "Segment",
    "StageInfo",
    "Step",
    "initial_state",
    "layout",
    "make_id",
]
