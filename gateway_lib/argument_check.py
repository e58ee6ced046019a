"""Check tool arguments against a JSON Schema that may be hostile, within the call's deadline.

A downstream server's inputSchema is untrusted input, checked on a worker thread that holds
the GIL whenever C code runs: a regular expression that backtracks for minutes (`pattern`,
`patternProperties`, `format`), or jsonschema's quadratic `uniqueItems`, cannot be timed
out from another thread and would hold up every other request. So those checks are never
run here (the server validates its own input anyway), and every other keyword first looks
at the call's deadline and cancel flag, so a schema that is merely expensive (nested
`anyOf`) stops with the call instead of outliving it.

Problems are reported in one notation: the JSON path of the offending value, then what is
wrong, cut to a readable length.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from .errors import RequestCancelled, ToolTimeout, cut
from .jsonfile import format_json_path

# Left to the server: each runs a regular expression, which can backtrack without end.
REGEX_KEYWORDS = ("pattern", "patternProperties", "format")
# jsonschema compares array items pairwise; past this many, the server judges uniqueness.
MAX_UNIQUE_ITEMS = 256
MAX_PROBLEMS = 20  # an agent needs the first few problems, not ten thousand
MAX_PROBLEM_CHARS = 300  # jsonschema quotes whole values; an argument may be megabytes

_guard = threading.local()  # the deadline and cancel flag of the check running on this thread


@dataclass(frozen=True)
class _Limits:
    deadline: float
    cancel: threading.Event | None
    what: str


def _check_limits() -> None:
    limits: _Limits | None = getattr(_guard, "limits", None)
    if limits is None:
        return
    if limits.cancel is not None and limits.cancel.is_set():
        raise RequestCancelled()
    if time.monotonic() >= limits.deadline:
        raise ToolTimeout(f"Checking the arguments of {limits.what} did not finish before the call's deadline")


def _guarded(keyword: Any) -> Any:
    def check(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        _check_limits()
        yield from keyword(validator, value, instance, schema) or ()

    return check


def _skipped(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
    return iter(())


def _bounded_unique_items(keyword: Any) -> Any:
    def check(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if isinstance(instance, list) and len(instance) > MAX_UNIQUE_ITEMS:
            return
        yield from keyword(validator, value, instance, schema)

    return check


def _unless_pattern_properties(keyword: Any) -> Any:
    # Which properties are "additional" depends on the patternProperties regexes.
    def check(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if isinstance(schema, dict) and "patternProperties" in schema:
            return
        yield from keyword(validator, value, instance, schema)

    return check


@functools.lru_cache(maxsize=None)
def _safe_class(base: type, pattern_properties_anywhere: bool) -> type:
    """`base` with the regex keywords skipped, uniqueItems bounded, and every keyword guarded."""
    from jsonschema import validators

    keywords = dict(base.VALIDATORS)
    for name in REGEX_KEYWORDS:
        if name in keywords:
            keywords[name] = _skipped
    if "uniqueItems" in keywords:
        keywords["uniqueItems"] = _bounded_unique_items(keywords["uniqueItems"])
    if "additionalProperties" in keywords:
        keywords["additionalProperties"] = _unless_pattern_properties(keywords["additionalProperties"])
    if pattern_properties_anywhere and "unevaluatedProperties" in keywords:
        # It walks every subschema's patternProperties: left to the server.
        keywords["unevaluatedProperties"] = _skipped
    guarded = {name: _guarded(keyword) for name, keyword in keywords.items()}
    return validators.extend(base, guarded)


def _mentions(schema: Any, key: str) -> bool:
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if key in node:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


class ArgumentChecker:
    """A compiled schema; `problems` lists what is wrong with one set of arguments."""

    def __init__(self, schema: dict[str, Any]):
        from jsonschema.validators import validator_for

        base = validator_for(schema)
        base.check_schema(schema)  # raises SchemaError: the caller decides what that means
        self._validator = _safe_class(base, _mentions(schema, "patternProperties"))(schema)

    def problems(self, instance: Any, *, deadline: float = float("inf"),
                 cancel: threading.Event | None = None, what: str = "the call") -> list[str]:
        """Every problem (up to MAX_PROBLEMS), sorted; raises ToolTimeout at `deadline` and
        RequestCancelled once `cancel` is set."""
        _guard.limits = _Limits(deadline, cancel, what)
        try:
            found = []
            for error in self._validator.iter_errors(instance):
                found.append(describe(error))
                if len(found) > MAX_PROBLEMS:
                    break
        finally:
            _guard.limits = None
        found.sort()
        if len(found) > MAX_PROBLEMS:
            found[MAX_PROBLEMS:] = ["(more problems not listed)"]
        return found


def describe(error: Any) -> str:
    """One jsonschema error as `$.path: message`, cut to MAX_PROBLEM_CHARS."""
    return cut(f"{format_json_path(error.absolute_path)}: {error.message}", MAX_PROBLEM_CHARS)

