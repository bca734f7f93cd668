"""``apiaryd``: settings, bootstrap, the daemon that owns store + API + background tasks."""

from __future__ import annotations

from apiary.server.daemon import Daemon
from apiary.server.settings import Settings
from apiary.server.supervisor import Supervisor

__all__ = ["Daemon", "Settings", "Supervisor"]
