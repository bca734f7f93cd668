"""The Waggle message: wire round trip, defaults, and validation errors that name their field."""

from __future__ import annotations

import re
from datetime import datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apiary.waggle import (
    InvalidMessage,
    Message,
    Usage,
    decode,
    encode,
    encode_line,
    new_id,
    now_rfc3339,
)

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def full_message() -> Message:
    return Message(
        {"text": "héllo", "n": [1, 2.5, None, True]},
        "request",
        metadata={"stage": "draft", "more": "true"},
        source_agent_id="planner",
        dest_agent_id="writer",
        session_id="sess-1",
        correlation_id="c-1",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        usage=Usage(12, 30),
    )


def test_round_trip_keeps_every_field() -> None:
    msg = full_message()
    line = encode_line(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = decode(line)
    assert back == msg
    assert back.to_dict() == msg.to_dict()
    wire = orjson.loads(line)
    assert wire["sourceAgentId"] == "planner" and wire["usage"] == {
        "promptTokens": 12,
        "completionTokens": 30,
    }
    assert back.usage is not None and back.usage.total == 42


def test_defaults_and_omitted_optionals() -> None:
    msg = Message("x")
    assert UUID4.match(msg.id) and msg.version == "1.0" and msg.type == "task"
    assert datetime.fromisoformat(msg.timestamp.replace("Z", "+00:00")).tzinfo is not None
    wire = msg.to_dict()
    assert set(wire) == {"id", "version", "type", "payload", "metadata", "timestamp"}
    minimal = decode(b'{"payload": 1}')
    assert minimal.type == "task" and UUID4.match(minimal.id) and minimal.metadata == {}


def test_new_ids_are_distinct_uuid4() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(UUID4.match(i) for i in ids)


def test_now_rfc3339_is_parseable_utc() -> None:
    ts = now_rfc3339()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts)
    assert datetime.fromisoformat(ts.replace("Z", "+00:00")).utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_token_count_metadata_is_read_into_usage() -> None:
    msg = decode(b'{"type": "result", "payload": "ok", "metadata": {"token-count": "150"}}')
    assert msg.usage == Usage(0, 150)
    explicit = decode(
        b'{"payload": 1, "metadata": {"token-count": "9"},'
        b' "usage": {"promptTokens": 1, "completionTokens": 2}}'
    )
    assert explicit.usage == Usage(1, 2)  # an explicit usage wins
    assert Message("x", metadata={"token-count": "7"}).usage == Usage(0, 7)


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        (b"[1, 2]", ""),
        (b"not json", ""),
        (b'{"type": "shout", "payload": 1}', "type"),
        (b'{"id": 5, "payload": 1}', "id"),
        (b'{"id": "", "payload": 1}', "id"),
        (b'{"version": "2.0", "payload": 1}', "version"),
        (b'{"metadata": ["a"], "payload": 1}', "metadata"),
        (b'{"metadata": {"retries": 3}, "payload": 1}', "metadata.retries"),
        (b'{"metadata": {"token-count": "lots"}, "payload": 1}', "metadata.token-count"),
        (b'{"timestamp": "yesterday", "payload": 1}', "timestamp"),
        (b'{"timestamp": "2024-01-01T00:00:00", "payload": 1}', "timestamp"),
        (b'{"sessionId": 7, "payload": 1}', "sessionId"),
        (b'{"correlationId": ["x"], "payload": 1}', "correlationId"),
        (b'{"traceparent": 1, "payload": 1}', "traceparent"),
        (b'{"usage": 5, "payload": 1}', "usage"),
        (b'{"usage": {"promptTokens": -1}, "payload": 1}', "usage.promptTokens"),
        (b'{"usage": {"completionTokens": 1.5}, "payload": 1}', "usage.completionTokens"),
        (b'{"usage": {"tokens": 1}, "payload": 1}', "usage.tokens"),
        (b'{"payload": 1, "colour": "red"}', "colour"),
    ],
)
def test_validation_names_the_field(wire: bytes, field: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        decode(wire)
    assert info.value.field == field
    assert str(info.value)  # a readable message, never a traceback


def test_timestamps_with_offsets_are_accepted() -> None:
    for ts in ("2024-05-01T10:20:30Z", "2024-05-01T10:20:30.123456+02:00", "2024-05-01t10:20:30z"):
        assert decode(orjson.dumps({"payload": 1, "timestamp": ts})).timestamp == ts


def test_constructor_rejects_unknown_type_and_encode_rejects_non_json_payload() -> None:
    with pytest.raises(InvalidMessage) as info:
        Message("x", "shout")
    assert info.value.field == "type"
    with pytest.raises(InvalidMessage) as info:
        encode(Message({1, 2}))
    assert info.value.field == "payload"


def test_reply_correlates_and_keeps_session() -> None:
    msg = full_message()
    out = msg.reply("done")
    assert (out.type, out.correlation_id, out.session_id, out.traceparent) == (
        "result",
        msg.id,
        "sess-1",
        msg.traceparent,
    )
    assert msg.more and not out.more


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(payload=json_values, meta=st.dictionaries(st.text(), st.text(), max_size=3))
def test_any_json_payload_round_trips(payload: object, meta: dict[str, str]) -> None:
    meta.pop("token-count", None)
    msg = Message(payload, "event", metadata=meta, session_id="s")
    assert decode(encode(msg)) == msg
