"""The LLM gateway: an OpenAI-compatible endpoint for every drone, on its node's keeper server.

A room of its own (issue 15): the node mounts it (:class:`apiary.gateway.service.LlmGateway`) on
the keeper's HTTP server, and it talks to the control plane through the API only, like the node.

* :mod:`.service` — the routes, forwarding, streaming relay;
* :mod:`.budget` — the per-drone meter: messages in flight and their token budgets;
* :mod:`.provider` — where a drone's calls go (``spec.llm`` and its Secret);
* :mod:`.tiers` — the drone's task tier: its model and token cap.
"""
