"""The clients resend a call the server refused with 429 + ``Retry-After`` (the API's overload
bound), honouring the header with jitter and giving up after ``max_retries``; a 429 without the
header (a hive at its queueLimit) is raised at once."""

from __future__ import annotations

import itertools
import time

import httpx
import pytest

from apiary import errors
from apiary.client import ApiClient, AsyncApiClient

BUSY = {"code": 429, "reason": "TooManyRequests", "message": "busy", "details": []}
OK = {"kind": "Cell", "metadata": {"name": "c"}}


def server(
    refusals: int, retry_after: str | None = "0.05"
) -> tuple[httpx.MockTransport, list[float]]:
    seen: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        if len(seen) <= refusals:
            headers = {"retry-after": retry_after} if retry_after is not None else {}
            return httpx.Response(429, json=BUSY, headers=headers)
        return httpx.Response(200, json=OK)

    return httpx.MockTransport(handle), seen


def test_a_refused_call_is_sent_again_after_retry_after() -> None:
    transport, seen = server(2)
    with ApiClient("http://apiary", token="t", transport=transport) as client:
        assert client.get("Cell", "c")["metadata"]["name"] == "c"
    assert len(seen) == 3
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert all(0.05 <= g < 0.05 * 1.5 + 0.05 for g in gaps), gaps


async def test_the_async_client_retries_too_and_gives_up_after_max_retries() -> None:
    transport, seen = server(100, "0")
    async with AsyncApiClient("http://apiary", token="t", transport=transport) as client:
        client.max_retries = 3
        with pytest.raises(errors.TooManyRequests):
            await client.get("Cell", "c")
    assert len(seen) == 4


@pytest.mark.parametrize("header", [None, "soon", "nan"])
def test_a_429_that_does_not_say_when_is_raised_at_once(header: str | None) -> None:
    transport, seen = server(1, header)
    client = ApiClient("http://apiary", token="t", transport=transport)
    with client, pytest.raises(errors.TooManyRequests):
        client.get("Cell", "c")
    assert len(seen) == 1
