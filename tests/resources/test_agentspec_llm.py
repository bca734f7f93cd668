"""AgentSpec ``spec.llm``: which provider the drones' LLM gateway forwards to (docs/gateway.md)."""

from __future__ import annotations

from apiary.resources import admit

from .helpers import agentspec, errors_of


def test_llm_section_defaults_the_secret_keys() -> None:
    admitted = admit(agentspec(llm={"provider": {"secretRef": {"name": "openai"}}}))
    llm = admitted.object["spec"]["llm"]
    assert llm["provider"]["secretRef"] == {
        "name": "openai", "baseUrlKey": "baseUrl", "apiKeyKey": "apiKey",
    }  # fmt: skip
    assert admitted.warnings == []
    custom = {"provider": {"secretRef": {"name": "local", "baseUrlKey": "url",
                                         "apiKeyKey": "token"}}, "model": "llama3"}  # fmt: skip
    assert admit(agentspec(llm=custom)).object["spec"]["llm"]["model"] == "llama3"


def test_llm_section_errors_name_the_field() -> None:
    errors = errors_of(agentspec(llm={"provider": {"secretRef": {"name": "Not_A_Name"}},
                                      "model": ""}))  # fmt: skip
    assert set(errors) == {"spec.llm.provider.secretRef.name", "spec.llm.model"}
    # a model alone is admitted: the provider may come from the Cell's spec.llm (test_llm_merge)
    assert admit(agentspec(llm={"model": "x"})).object["spec"]["llm"] == {"model": "x"}
    assert "spec.llm.provider.secretRef.apiKeyKey" in errors_of(
        agentspec(llm={"provider": {"secretRef": {"name": "s", "apiKeyKey": "a key"}}})
    )


def test_unknown_llm_fields_are_warnings() -> None:
    body = agentspec(llm={"provider": {"secretRef": {"name": "s"}}, "temperature": 0.2})
    assert admit(body).warnings == ['unknown field "spec.llm.temperature"']
