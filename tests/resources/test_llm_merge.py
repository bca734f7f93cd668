"""How an AgentSpec's ``spec.llm`` and its Cell's merge (apiary.resources.llm): the AgentSpec's
fields win, the provider is taken whole, and a model only comes with the Cell's provider."""

from __future__ import annotations

import pytest

from apiary.controllers.templates import drone_template
from apiary.resources import admit
from apiary.resources.llm import merged_llm

from .helpers import errors_of

CELL = {"provider": {"secretRef": {"name": "team"}, "api": "anthropic"}, "model": "claude"}
OWN_PROVIDER = {"secretRef": {"name": "mine"}}


@pytest.mark.parametrize(
    ("own", "cell", "want", "sources"),
    [
        (None, None, None, {}),
        (None, CELL, CELL, {"provider": "cell", "model": "cell"}),
        ({"model": "haiku"}, CELL, {**CELL, "model": "haiku"},
         {"provider": "cell", "model": "agentspec"}),
        # its own provider: the Cell's model belongs to the Cell's provider, not inherited
        ({"provider": OWN_PROVIDER}, CELL, {"provider": OWN_PROVIDER}, {"provider": "agentspec"}),
        ({"provider": OWN_PROVIDER, "model": "m"}, None, {"provider": OWN_PROVIDER, "model": "m"},
         {"provider": "agentspec", "model": "agentspec"}),
        ({"model": "m"}, None, {"model": "m"}, {"model": "agentspec"}),
    ],
)  # fmt: skip
def test_merge(own: object, cell: object, want: object, sources: dict[str, str]) -> None:
    assert merged_llm(own, cell) == (want, sources)


def agentspec(**spec: object) -> dict[str, object]:
    return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
            "metadata": {"name": "a", "namespace": "c"},
            "spec": {"runtime": {"command": ["x"]}, **spec}}  # fmt: skip


def test_the_drone_template_carries_the_merged_llm_and_is_unchanged_without_a_cell_default() -> (
    None
):
    own = {"provider": OWN_PROVIDER, "model": "m"}
    cell = {"metadata": {"name": "c"}, "spec": {"llm": CELL}}
    assert drone_template(agentspec(llm=own), cell=None)["llm"] == own
    assert drone_template(agentspec(llm=own), cell={"spec": {}})["llm"] == own
    assert drone_template(agentspec(), cell=cell)["llm"] == CELL
    assert "llm" not in drone_template(agentspec(), cell=None)


def test_a_cell_may_set_llm_and_its_errors_name_the_field() -> None:
    cell = {"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": "c"},
            "spec": {"llm": CELL}}  # fmt: skip
    assert admit(cell).object["spec"]["llm"]["provider"]["api"] == "anthropic"
    bad = {**cell, "spec": {"llm": {"provider": {"secretRef": {"name": "x"}, "api": "nope"}}}}
    assert "spec.llm.provider.api" in errors_of(bad)
