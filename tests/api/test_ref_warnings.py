"""Applying a Hive whose agentRef has no AgentSpec, and deleting an AgentSpec a Hive still names,
answer with a Warning naming the field and the object (as kubectl users hear of unknown
fields); the request itself succeeds, since objects may be applied in any order."""

from __future__ import annotations

from .conftest import Api, path_of, sample


def hive(*agents: str) -> dict:
    body = sample("Hive", "h")
    body["spec"]["stages"] = [{"name": f"s{i}", "agentRef": a} for i, a in enumerate(agents)]
    return body


async def test_a_hive_naming_a_missing_agentspec_is_created_with_a_warning(mem_api: Api) -> None:
    c = mem_api.client
    assert (await c.post(path_of("AgentSpec"), json=sample("AgentSpec", "here"))).is_success
    r = await c.post(path_of("Hive"), json=hive("here", "gone", "gone"))
    assert r.status_code == 201
    (warning,) = r.headers.get_list("warning")
    assert "spec.stages[1].agentRef, spec.stages[2].agentRef" in warning
    assert "AgentSpec 'gone' does not exist in cell 'default'" in warning
    # fixed: the replace is quiet
    assert (await c.post(path_of("AgentSpec"), json=sample("AgentSpec", "gone"))).is_success
    r = await c.put(path_of("Hive", "h"), json=hive("here", "gone"))
    assert r.status_code == 200 and r.headers.get_list("warning") == []
    # a merge patch that points a stage elsewhere warns too
    r = await c.patch(
        path_of("Hive", "h"),
        json={"spec": {"stages": [{"name": "s0", "agentRef": "nowhere"}]}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert any("AgentSpec 'nowhere'" in w for w in r.headers.get_list("warning"))


async def test_deleting_an_agentspec_a_hive_names_warns_with_the_hive(mem_api: Api) -> None:
    c = mem_api.client
    assert (await c.post(path_of("AgentSpec"), json=sample("AgentSpec", "a"))).is_success
    assert (await c.post(path_of("AgentSpec"), json=sample("AgentSpec", "b"))).is_success
    assert (await c.post(path_of("Hive"), json=hive("a", "b"))).status_code == 201
    r = await c.delete(path_of("AgentSpec", "a"))
    assert r.status_code == 200
    (warning,) = r.headers.get_list("warning")
    assert "hive/h still names AgentSpec 'a' (spec.stages[0].agentRef)" in warning
    assert (await c.post(path_of("AgentSpec"), json=sample("AgentSpec", "unused"))).is_success
    r = await c.delete(path_of("AgentSpec", "unused"))
    assert r.status_code == 200 and r.headers.get_list("warning") == []
