"""Unit tests of line framing: what becomes a message, what becomes which error."""

import io
import json
import os
import threading

import pytest

from gateway_lib.errors import INVALID_REQUEST, PARSE_ERROR
from gateway_lib.framing import MessageReader, MessageWriter, Unreadable, decode_line, encode, top_level_id


def read_all(data: bytes, max_line_bytes: int = 1024) -> list:
    return list(MessageReader(io.BytesIO(data), max_line_bytes).messages())


def test_each_line_is_one_message():
    assert read_all(b'{"a":1}\n{"b":2}\n') == [{"a": 1}, {"b": 2}]


def test_crlf_line_endings_and_a_bom_are_accepted():
    assert read_all(b'\xef\xbb\xbf{"a":1}\r\n{"b":2}\r\n') == [{"a": 1}, {"b": 2}]


def test_blank_and_whitespace_lines_are_skipped():
    assert read_all(b'\n   \n\t\r\n{"a":1}\n') == [{"a": 1}]


def test_last_line_without_newline_is_still_read():
    assert read_all(b'{"a":1}') == [{"a": 1}]


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b"{not json", "Parse error"),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "ping"', "Parse error"),
        (b'{"x": \xff\xfe}', "not valid UTF-8"),
        (b'{"x": NaN}', "NaN"),
        (b'{"x": Infinity}', "Infinity"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"x": ' + b"9" * 5000 + b"}", "too many digits"),
    ],
    ids=["invalid json", "truncated json", "invalid utf-8", "NaN", "Infinity", "nested 100000 deep", "5000-digit number"],
)
def test_unusable_lines_become_parse_errors(raw, fragment):
    message = decode_line(raw)
    assert isinstance(message, Unreadable)
    assert message.error.code == PARSE_ERROR
    assert fragment in message.error.message


def test_duplicate_keys_are_refused_with_the_request_id_kept():
    message = decode_line(b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"a":1,"a":2}}')
    assert isinstance(message, Unreadable)
    assert message.error.code == INVALID_REQUEST
    assert "'a'" in message.error.message
    assert message.request_id == 7


def test_a_lone_surrogate_escape_is_valid_json_and_is_sent_back_escaped():
    message = decode_line(b'{"text": "\\ud800"}')
    assert message == {"text": "\ud800"}
    line = encode(message)
    assert json.loads(line) == message
    line.decode("utf-8")  # the wire stays valid UTF-8


def test_an_oversized_line_is_refused_and_the_next_line_still_read():
    big = b'{"pad": "' + b"x" * 5000 + b'"}\n'
    messages = read_all(big + b'{"after": true}\n', max_line_bytes=1024)
    assert isinstance(messages[0], Unreadable)
    assert messages[0].error.code == INVALID_REQUEST
    assert "1024-byte" in messages[0].error.message
    assert messages[1] == {"after": True}


class _CountingStream(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.largest_read = 0

    def readline(self, size=-1):
        chunk = super().readline(size)
        self.largest_read = max(self.largest_read, len(chunk))
        return chunk


def test_an_oversized_line_is_never_held_whole_in_memory():
    stream = _CountingStream(b"x" * 10_000_000 + b"\n")
    list(MessageReader(stream, max_line_bytes=4096).messages())
    assert stream.largest_read <= 64 * 1024


def test_encode_writes_one_compact_line():
    assert encode({"a": [1, "é"]}) == '{"a":[1,"é"]}\n'.encode()


def test_encode_refuses_nan_rather_than_sending_invalid_json():
    with pytest.raises(ValueError):
        encode({"x": float("nan")})


def test_writer_survives_a_closed_client_and_stops_writing_to_it():
    class Closed(io.BytesIO):
        attempts = 0

        def write(self, data):
            Closed.attempts += 1
            raise BrokenPipeError()

    writer = MessageWriter(Closed())
    writer.write({})
    writer.write({})  # no exception the second time either, and no second attempt
    assert writer.close(5)  # nothing left waiting: the lines were dropped
    assert Closed.attempts == 1


def test_writer_delivers_every_queued_line_in_order_before_close_returns():
    stream = io.BytesIO()
    writer = MessageWriter(stream)
    for n in range(100):
        writer.write({"n": n})
    assert writer.close(5)
    assert [json.loads(line)["n"] for line in stream.getvalue().splitlines()] == list(range(100))
    writer.write({"late": True})  # dropped: the writer is closed
    assert b"late" not in stream.getvalue()


def test_a_writer_to_a_client_that_stopped_reading_queues_without_blocking_up_to_its_backlog():
    read_end, write_end = os.pipe()
    stuck = os.fdopen(write_end, "wb", buffering=0)
    waiting_is_pointless = threading.Event()
    writer = MessageWriter(stuck, max_backlog_bytes=256 * 1024, may_exceed=waiting_is_pointless.is_set)
    line = {"x": "y" * 1000}

    def writing(count: int) -> threading.Event:
        done = threading.Event()

        def write_all() -> None:
            for _ in range(count):
                writer.write(line)
            done.set()

        threading.Thread(target=write_all, daemon=True).start()
        return done

    try:
        assert writing(200).wait(10)  # 200 KB: more than the pipe holds, less than the backlog
        past = writing(200)
        assert not past.wait(0.5)  # past the backlog a writer waits for room ...
        waiting_is_pointless.set()
        assert past.wait(10)  # ... until may_exceed() says waiting is pointless
        assert not writer.close(0.2)  # nobody reads: closing gives up at its bound
    finally:
        os.close(read_end)  # the writer's thread, blocked on the pipe, fails and ends
        stuck.close()


def test_writer_raises_on_a_value_it_cannot_encode_and_writes_nothing():
    stream = io.BytesIO()
    writer = MessageWriter(stream)
    with pytest.raises(ValueError):
        writer.write({"x": float("nan")})
    assert writer.close(5)
    assert stream.getvalue() == b""


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("line, expected", [
    ('{"jsonrpc":"2.0","id":7,"result":{"v":' + DEEP + "}}", 7),
    ('{"jsonrpc":"2.0","result":{"v":' + DEEP + ',"id":3},"id" : "a\\"b"}', 'a"b'),  # after, escaped
    ('{"id":"\\ud800","result":{}}', "\ud800"),
    ('{"x":"id","result":{"id":1}}', None),  # "id" as a value, and one nested: neither is the top's
    ('{"s":"\\"id\\":5","id":9}', 9),  # "id" inside a string
    ('{"id":true,"result":{}}', None),  # not a valid id
    ('{"id":[' + DEEP + '],"result":{}}', None),
], ids=["deep result", "id last, escaped", "lone surrogate", "nested and as a value only", "in a string",
        "bool", "deep id"])
def test_the_top_level_id_of_a_line_no_parser_takes_is_found_without_parsing_it(line, expected):
    assert top_level_id(line) == expected
