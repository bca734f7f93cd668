"""generateName: a collision with an existing name is retried with a fresh suffix, not a 409."""

from __future__ import annotations

import itertools

import pytest

from apiary.api import handlers

from .conftest import Api, path_of


async def test_generated_name_collision_is_retried(
    mem_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"kind": "Session", "metadata": {"generateName": "g-"}, "spec": {"hiveRef": "h"}}
    taken = {"kind": "Session", "metadata": {"name": "g-aaaaa"}, "spec": {"hiveRef": "h"}}
    assert (await mem_api.client.post(path_of("Session"), json=taken)).status_code == 201
    letters = itertools.chain("aaaaa", "aaaaa", itertools.cycle("b"))  # two collisions first
    monkeypatch.setattr(handlers.secrets, "choice", lambda _: next(letters))
    r = await mem_api.client.post(path_of("Session"), json=body)
    assert r.status_code == 201, r.text
    assert r.json()["metadata"]["name"] == "g-bbbbb"


async def test_a_given_name_that_exists_is_still_a_conflict(mem_api: Api) -> None:
    body = {
        "kind": "Session",
        "metadata": {"name": "n", "generateName": "g-"},
        "spec": {"hiveRef": "h"},
    }
    assert (await mem_api.client.post(path_of("Session"), json=body)).status_code == 201
    r = await mem_api.client.post(path_of("Session"), json=body)
    assert r.status_code == 409 and r.json()["reason"] == "AlreadyExists"
