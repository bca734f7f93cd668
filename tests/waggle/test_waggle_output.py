"""DESIGN §5's rules for turning an agent's output line into a Waggle message."""

from __future__ import annotations

import orjson
import pytest

from apiary.waggle import InvalidMessage, Message, parse_output_line

ASKED = Message("question", session_id="sess-9", traceparent="00-abc-def-01")


def test_a_waggle_line_is_taken_as_is_with_correlation_defaulted() -> None:
    line = orjson.dumps(
        {"type": "event", "payload": {"k": 1}, "metadata": {"more": "true"}, "id": "out-1"}
    )
    out = parse_output_line(line, ASKED)
    assert (out.type, out.id, out.payload, out.more) == ("event", "out-1", {"k": 1}, True)
    assert out.correlation_id == ASKED.id
    assert out.session_id == "sess-9" and out.traceparent == "00-abc-def-01"


def test_an_explicit_correlation_id_is_kept() -> None:
    out = parse_output_line(b'{"type": "task", "payload": 1, "correlationId": "other"}', ASKED)
    assert out.correlation_id == "other" and out.type == "task"


def test_a_waggle_line_without_type_defaults_to_result() -> None:
    out = parse_output_line(b'{"version": "1.0", "payload": "x"}', ASKED)
    assert out.type == "result" and out.payload == "x"


@pytest.mark.parametrize(
    ("line", "payload"),
    [
        (b'{"answer": 42}', {"answer": 42}),
        (b'{"payload": 1}', {"payload": 1}),  # no type/version: a bare payload
        (b"[1, 2, 3]", [1, 2, 3]),
        (b"3.5", 3.5),
        (b'"quoted"', "quoted"),
        (b"Echo: hello world", "Echo: hello world"),
        (b"Echo: hello\r\n", "Echo: hello"),
        (b"", ""),
        (b"caf\xe9 \xff", "caf\ufffd \ufffd"),
        ("plain str line\n", "plain str line"),
    ],
)
def test_other_lines_become_the_payload_of_a_result(line: bytes | str, payload: object) -> None:
    out = parse_output_line(line, ASKED)
    assert out.type == "result" and out.payload == payload
    assert out.correlation_id == ASKED.id and out.session_id == "sess-9"


def test_a_malformed_waggle_line_is_an_error_naming_the_field() -> None:
    with pytest.raises(InvalidMessage) as info:
        parse_output_line(b'{"type": "shout", "payload": 1}', ASKED)
    assert info.value.field == "type"
    with pytest.raises(InvalidMessage) as info:
        parse_output_line(b'{"type": "result", "payload": 1, "metadata": {"n": 1}}', ASKED)
    assert info.value.field == "metadata.n"


def test_a_line_answering_nothing_has_no_correlation() -> None:
    out = parse_output_line(b"banner: agent v1 starting", None)
    assert out.correlation_id is None and out.payload == "banner: agent v1 starting"
