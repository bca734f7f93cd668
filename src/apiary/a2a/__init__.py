"""Every exposed Hive an A2A agent (Agent2Agent protocol v1.0, JSON-RPC binding).

A Hive with ``spec.a2a.expose: true`` answers at ``/a2a/cells/{cell}/hives/{hive}`` (JSON-RPC:
``SendMessage``, ``SendStreamingMessage``, ``GetTask``, ``CancelTask``, ``SubscribeToTask``) with
its agent card at ``…/.well-known/agent-card.json``; ``/a2a/cells/{cell}`` lists the cell's cards.
An A2A task is a Session (a job of the hive): nothing here keeps state of its own — a task's
state, history and event stream are read from the session's journal, so a client that
reconnects, even to a restarted apiaryd, resumes without losing an event. Implemented on FastAPI
directly (the ``a2a-sdk`` is needed by clients only, not by apiaryd); see docs/interop.md.
"""

from apiary.a2a.routes import a2a_routes

__all__ = ["a2a_routes"]
