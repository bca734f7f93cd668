"""A Cell's ``spec.llm`` is the default of its AgentSpecs' (issue 15.1: "``AgentSpec.spec.llm``
or Cell defaults"): an AgentSpec without ``spec.llm`` calls the Cell's provider and model; one
that names only a model keeps it and takes the Cell's provider; one naming its own provider
keeps it. Real agents (the ``openai`` SDK in a drone) call through the node's gateway to the fake
provider; ``describe agentspec`` says where each part came from; the Cell's Secret is readable by
the node that runs a drone using it, and by no other node."""

from __future__ import annotations

from pathlib import Path

import httpx
from test_gateway_openai_sdk import SDK_AGENT, ask, sdk_world

from stack import TOKEN, agentspec, apiaryctl, hive, is_ready

PROVIDER = {"secretRef": {"name": "provider"}}


async def mint(http: httpx.AsyncClient, node: str) -> str:
    r = await http.post("/api/v1/tokens", json={
        "metadata": {"name": node}, "spec": {"role": "node", "node": node}})  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["status"]["token"])


async def test_an_agentspec_without_llm_uses_its_cells_and_its_own_fields_win(
    tmp_path: Path, cell: str
) -> None:
    async with sdk_world(tmp_path, cell) as (stack, provider):
        cell_llm = {"llm": {"provider": PROVIDER, "model": "fake-small"}}
        await stack.apply({"apiVersion": "apiary.io/v1", "kind": "Cell",
                           "metadata": {"name": cell}, "spec": cell_llm})  # fmt: skip
        await stack.apply({"apiVersion": "apiary.io/v1", "kind": "Secret",
                           "metadata": {"name": "unused", "namespace": cell},
                           "stringData": {"apiKey": "x"}})  # fmt: skip
        plain = agentspec(cell, "plain", SDK_AGENT, fmt="waggle")  # no spec.llm at all
        await stack.apply(plain)
        await stack.apply(hive(cell, "h", [("ask", "plain", 1)]))
        drones = await stack.wait(lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 20, "ready")
        llm = drones[0]["spec"]["llm"]  # the Cell's, merged into the drone's spec
        assert llm["provider"]["secretRef"]["name"] == "provider" and llm["model"] == "fake-small"
        done = await ask(stack, "s1", {"op": "chat", "text": "hello"})
        assert done.kind == "final", done.message
        assert done.message["payload"]["text"] == "echo: hello"
        assert provider.chat_calls()[-1].body["model"] == "fake-small"  # the Cell's model
        shown = await apiaryctl(stack, "describe", "agentspec", "plain")
        assert (f"LLM:          provider openai (secret provider) from cell {cell}, model "
                f"fake-small from cell {cell}") in shown  # fmt: skip

        # The Cell's Secret: readable by the node running a drone that uses it, by no other.
        admin = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=stack.url, timeout=10, headers=admin) as http:
            on, off = await mint(http, drones[0]["spec"]["nodeName"]), await mint(http, "node-z")
            base = f"/api/v1/cells/{cell}/secrets"
            r = await http.get(
                f"{base}/provider?reveal=true", headers={"Authorization": f"Bearer {on}"}
            )
            assert r.status_code == 200 and r.json()["data"]["apiKey"], r.text
            for token, name in ((off, "provider"), (on, "unused")):
                r = await http.get(f"{base}/{name}?reveal=true",
                                   headers={"Authorization": f"Bearer {token}"})  # fmt: skip
                assert r.status_code == 403, (name, r.text)
                assert "uses it" in r.json()["message"]

        # Its own model wins; the provider still comes from the Cell.
        plain["spec"]["llm"] = {"model": "fake-large"}
        await stack.apply(plain)
        await stack.wait(
            lambda ds: len(ds) == 1 and all(map(is_ready, ds))
            and ds[0]["spec"]["llm"].get("model") == "fake-large", 20, "rolled",
        )  # fmt: skip
        done = await ask(stack, "s2", {"op": "chat", "text": "again"})
        assert done.kind == "final", done.message
        assert provider.chat_calls()[-1].body["model"] == "fake-large"
        shown = await apiaryctl(stack, "describe", "agentspec", "plain")
        assert (f"LLM:          provider openai (secret provider) from cell {cell}, model "
                "fake-large from the agentspec") in shown  # fmt: skip


async def test_an_llm_named_nowhere_is_refused_naming_the_field(tmp_path: Path, cell: str) -> None:
    async with sdk_world(tmp_path, cell) as (stack, _):
        agent = agentspec(cell, "bare", SDK_AGENT, fmt="waggle")
        agent["spec"]["llm"] = {"model": "fake-small"}  # a model, but no provider anywhere
        await stack.apply(agent)
        await stack.apply(hive(cell, "h", [("ask", "bare", 1)]))
        await stack.wait(lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 20, "ready")
        done = await ask(stack, "s1", {"op": "chat", "text": "hello"})
        assert "spec.llm.provider: neither the AgentSpec nor its Cell" in str(done.message)
        shown = await apiaryctl(stack, "describe", "agentspec", "bare")
        assert "no provider (set spec.llm.provider here or in the cell)" in shown
