"""The router: runs each session's pattern over the journal and the bus (docs/sessions.md)."""

from apiary.router.service import Router
from apiary.router.sessions import JOB_LABEL, OPEN_PHASES, SessionDirectory, SessionInfo

__all__ = ["JOB_LABEL", "OPEN_PHASES", "Router", "SessionDirectory", "SessionInfo"]
