"""The Queen: level-triggered reconcilers that turn Hives and AgentSpecs into placed drones.

apiaryd runs :func:`run_controllers`; tests and tools can drive the pieces one pass at a time
(:class:`Queen` ``.sync_once()``, or each reconciler's ``reconcile``/``run_once``).
Controllers talk to the store only — never to the API or the CLI.
"""

from __future__ import annotations

from apiary.controllers.agentspec import AgentSpecReconciler, wanted_replicas
from apiary.controllers.events import EventRecorder
from apiary.controllers.gc import GarbageCollector
from apiary.controllers.hive import HiveReconciler
from apiary.controllers.meta import LABEL_AGENTSPEC, LABEL_HIVE, LABEL_STAGE, LABEL_TEMPLATE
from apiary.controllers.nodes import NodeController, lease_fresh, renew_time
from apiary.controllers.runner import Queen, run_controllers
from apiary.controllers.scheduler import Scheduler
from apiary.controllers.settings import (
    EventSettings,
    GCSettings,
    LoopSettings,
    NodeSettings,
    QueenSettings,
    RolloutSettings,
    SchedulerSettings,
)
from apiary.controllers.templates import Stage, drone_template, hive_stages

__all__ = [
    "LABEL_AGENTSPEC",
    "LABEL_HIVE",
    "LABEL_STAGE",
    "LABEL_TEMPLATE",
    "AgentSpecReconciler",
    "EventRecorder",
    "EventSettings",
    "GCSettings",
    "GarbageCollector",
    "HiveReconciler",
    "LoopSettings",
    "NodeController",
    "NodeSettings",
    "Queen",
    "QueenSettings",
    "RolloutSettings",
    "Scheduler",
    "SchedulerSettings",
    "Stage",
    "drone_template",
    "hive_stages",
    "lease_fresh",
    "renew_time",
    "run_controllers",
    "wanted_replicas",
]
