"""The node side: running agent processes (launcher), their logs, and cleaning up after a crash.

The node agent talks to the control plane over HTTP and the bus only; nothing here imports the
store, the API or the controllers.
"""

from apiary.node.backoff import Backoff, BackoffPolicy
from apiary.node.launcher import DroneProcess, LaunchError, LaunchSpec, launch
from apiary.node.logs import LogLine, LogWriter, drone_log_path, follow_logs, read_logs
from apiary.node.orphans import reap_orphans
from apiary.node.supervision import DroneRuntimeStatus, Supervisor

__all__ = [
    "Backoff",
    "BackoffPolicy",
    "DroneProcess",
    "DroneRuntimeStatus",
    "LaunchError",
    "LaunchSpec",
    "LogLine",
    "LogWriter",
    "Supervisor",
    "drone_log_path",
    "follow_logs",
    "launch",
    "read_logs",
    "reap_orphans",
]
