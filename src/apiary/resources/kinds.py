"""Which model validates which kind."""

from __future__ import annotations

from apiary.resources.agentspec import AgentSpec
from apiary.resources.cell import Cell
from apiary.resources.drone import Drone
from apiary.resources.event import Event
from apiary.resources.hive import Hive
from apiary.resources.meta import ApiObject
from apiary.resources.node import Node
from apiary.resources.registry import KINDS
from apiary.resources.secret import Secret
from apiary.resources.session import Session
from apiary.resources.token import Token

MODELS: dict[str, type[ApiObject]] = {
    "Cell": Cell,
    "Secret": Secret,
    "AgentSpec": AgentSpec,
    "Hive": Hive,
    "Drone": Drone,
    "Session": Session,
    "Node": Node,
    "Event": Event,
    "Token": Token,
}

assert set(MODELS) == {info.kind for info in KINDS}, "every registered kind needs a model"
