"""Unit tests of line framing: what becomes a message, what becomes which error."""

import io
import json

import pytest

from gateway_lib.errors import INVALID_REQUEST, PARSE_ERROR
from gateway_lib.framing import MessageReader, MessageWriter, Unreadable, decode_line, encode


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
    assert Closed.attempts == 1


def test_writer_raises_on_a_value_it_cannot_encode_and_writes_nothing():
    stream = io.BytesIO()
    with pytest.raises(ValueError):
        MessageWriter(stream).write({"x": float("nan")})
    assert stream.getvalue() == b""
