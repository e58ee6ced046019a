"""Read one JSON config file and know the line of every value in it.

The json module reports no positions for values, so a small walker over the text (run only
on text json.loads has accepted) records them; problems can then point at `file:line`.
Duplicate keys, which json.loads would let silently win, are found on the same walk.
"""

from __future__ import annotations

import bisect
import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Iterable

from .errors import ConfigError, Problem

_MAX_QUOTED = 80

JsonPath = tuple[str | int, ...]


def quote(value: object) -> str:
    """repr(value), shortened: long or hostile values stay readable in a message."""
    text = repr(value)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


# ============================================================================ JSON paths


_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_LONG_NUMBER = re.compile(r"\d{1000,}")


def format_json_path(path: Iterable[str | int]) -> str:
    """('mcpServers', 'db', 'args', 0) -> "$.mcpServers.db.args[0]"; odd keys get brackets."""
    parts = ["$"]
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif _SIMPLE_KEY.fullmatch(part):
            parts.append(f".{part}")
        else:
            parts.append(f"[{part!r}]")  # repr escapes quotes and control characters
    return "".join(parts)


class JsonLocator:
    """Records the line of every value (and every duplicate key) in a JSON text.

    Runs only on text that json.loads has already accepted, so it can skip validation;
    the json module itself reports no positions for values, hence this small walker.
    """

    def __init__(self, text: str):
        self._text = text
        self._pos = 0
        self._newlines = [index for index, char in enumerate(text) if char == "\n"]
        self.lines: dict[JsonPath, int] = {}
        self.duplicates: list[tuple[JsonPath, int]] = []

    def run(self) -> "JsonLocator":
        self._value(())
        return self

    def _line(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1

    def _skip_whitespace(self) -> None:
        while self._pos < len(self._text) and self._text[self._pos] in " \t\r\n":
            self._pos += 1

    def _next_char(self) -> str:
        self._skip_whitespace()
        char = self._text[self._pos]
        self._pos += 1
        return char

    def _value(self, path: JsonPath) -> None:
        self._skip_whitespace()
        self.lines[path] = self._line(self._pos)  # later duplicates win, as in json.loads
        char = self._text[self._pos]
        if char == "{":
            self._object(path)
        elif char == "[":
            self._array(path)
        elif char == '"':
            self._string()
        else:
            self._scalar()

    def _object(self, path: JsonPath) -> None:
        self._pos += 1
        self._skip_whitespace()
        if self._text[self._pos] == "}":
            self._pos += 1
            return
        seen: set[str] = set()
        while True:
            self._skip_whitespace()
            key_line = self._line(self._pos)
            key = self._string()
            if key in seen:
                self.duplicates.append((path + (key,), key_line))
            seen.add(key)
            self._next_char()  # ':'
            self._value(path + (key,))
            if self._next_char() == "}":
                return

    def _array(self, path: JsonPath) -> None:
        self._pos += 1
        self._skip_whitespace()
        if self._text[self._pos] == "]":
            self._pos += 1
            return
        index = 0
        while True:
            self._value(path + (index,))
            index += 1
            if self._next_char() == "]":
                return

    def _string(self) -> str:
        start = self._pos
        self._pos += 1
        while self._text[self._pos] != '"':
            self._pos += 2 if self._text[self._pos] == "\\" else 1
        self._pos += 1
        return json.loads(self._text[start : self._pos])

    def _scalar(self) -> None:
        while self._pos < len(self._text) and self._text[self._pos] not in ",]} \t\r\n":
            self._pos += 1


# ============================================================================ reading


@dataclass
class Document:
    """One parsed file plus what is needed to point at a place in it."""

    file: str
    data: Any
    lines: dict[JsonPath, int] = field(default_factory=dict)

    def line_of(self, path: JsonPath) -> int | None:
        """Line of the value at `path`, or of its nearest ancestor that exists."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def problem(self, path: JsonPath, message: str) -> Problem:
        return Problem(self.file, format_json_path(path), message, self.line_of(path))


def read_document(path: str | os.PathLike[str]) -> tuple[Document, list[Problem]]:
    """Read and parse; raises ConfigError when there is nothing to validate."""
    file = str(path)
    text = _read_text(file)
    if not text.strip():
        raise ConfigError([Problem(file, "$", "file is empty: it must contain a JSON object")])
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise ConfigError([Problem(file, "$", message, exc.lineno)]) from None
    except RecursionError:
        raise ConfigError([Problem(file, "$", "JSON is nested too deeply")]) from None
    except ValueError:  # an integer past Python's digit limit (4,300 digits by default)
        long_number = _LONG_NUMBER.search(text)
        line = text.count("\n", 0, long_number.start()) + 1 if long_number else None
        message = "a number has thousands of digits, more than any setting can use: shorten it"
        raise ConfigError([Problem(file, "$", message, line)]) from None
    try:
        locator = JsonLocator(text).run()
    except RecursionError:
        raise ConfigError([Problem(file, "$", "JSON is nested too deeply")]) from None
    document = Document(file, data, locator.lines)
    duplicates = [
        Problem(file, format_json_path(key_path), _duplicate_message(key_path), line)
        for key_path, line in locator.duplicates
    ]
    return document, duplicates


def _duplicate_message(key_path: JsonPath) -> str:
    return (
        f"key {quote(key_path[-1])} appears more than once in the same object: "
        "keep only one (otherwise the last one would silently win)"
    )


def _read_text(file: str) -> str:
    try:
        raw = _read_regular_file(file)
    except FileNotFoundError:
        raise ConfigError([Problem(file, "$", "file not found")]) from None
    except _NotRegular as exc:
        raise ConfigError([Problem(file, "$", f"{exc}: a config must be a regular file")]) from None
    except OSError as exc:
        raise ConfigError([Problem(file, "$", f"cannot read file: {exc.strerror}")]) from None
    try:
        return raw.decode("utf-8-sig")  # tolerates the BOM some Windows editors write
    except UnicodeDecodeError as exc:
        message = f"file is not valid UTF-8 (bad byte at offset {exc.start}): save it as UTF-8"
        raise ConfigError([Problem(file, "$", message)]) from None


class _NotRegular(OSError):
    pass


def _read_regular_file(file: str) -> bytes:
    """The bytes of `file`, refusing anything but a regular file.

    Opened without blocking and checked on the open descriptor: reading a FIFO (or a
    device, or a socket) left where a config was would block its reader, and with it a
    reload and everything waiting on the config, forever.
    """
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "a special file"
            raise _NotRegular(f"it is {kind}")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as stream:
            return stream.read()
    finally:
        os.close(fd)
