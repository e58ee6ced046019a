"""Checking arguments against an untrusted inputSchema: never a regex, never unbounded work."""

from __future__ import annotations

import threading
import time

import pytest

from gateway_lib.argument_check import MAX_PROBLEMS, MAX_UNIQUE_ITEMS, ArgumentChecker
from gateway_lib.errors import RequestCancelled, ToolTimeout

CATASTROPHIC = "^(a+)+$"  # backtracks for minutes on "aaaa…a!"


def nested(depth: int, leaf: object = "x") -> object:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# Every level tries both branches and both fail at the leaf: 2**depth descents.
EXPONENTIAL = {
    "type": "object",
    "properties": {"t": {"$ref": "#/$defs/n"}},
    "$defs": {"n": {"anyOf": [{"type": "array", "items": {"$ref": "#/$defs/n"}},
                              {"type": "array", "items": {"$ref": "#/$defs/n"}}]}},
}


@pytest.mark.parametrize("schema", [
    {"properties": {"s": {"type": "string", "pattern": CATASTROPHIC}}},
    {"patternProperties": {CATASTROPHIC: {"type": "string"}}, "additionalProperties": False},
    {"propertyNames": {"pattern": CATASTROPHIC}},
    {"properties": {"s": {"type": "string", "format": "regex"}}},
], ids=["pattern", "patternProperties with additionalProperties", "propertyNames pattern", "format"])
def test_a_regular_expression_in_the_schema_is_never_run(schema):
    checker = ArgumentChecker(schema)
    arguments = {"s": "a" * 34 + "!", "a" * 34 + "!": "v"}
    assert checker.problems(arguments, deadline=time.monotonic() + 30) == []


def test_unique_items_over_a_large_array_is_left_to_the_server_and_judged_when_small():
    checker = ArgumentChecker({"properties": {"xs": {"type": "array", "uniqueItems": True}}})
    assert checker.problems({"xs": [{"i": 0}] * (MAX_UNIQUE_ITEMS + 1)}) == []
    assert checker.problems({"xs": [{"i": 0}, {"i": 0}]}) != []


def test_the_other_keywords_are_still_checked():
    checker = ArgumentChecker({"type": "object", "properties": {"s": {"type": "string", "pattern": "^a$"}},
                               "required": ["n"]})
    assert checker.problems({"s": 5}) == ["$.s: 5 is not of type 'string'", "$: 'n' is a required property"]


def test_an_expensive_schema_stops_at_the_deadline():
    checker = ArgumentChecker(EXPONENTIAL)
    with pytest.raises(ToolTimeout):
        checker.problems({"t": nested(40)}, deadline=time.monotonic() + 0.2)


def test_an_expensive_schema_stops_once_the_call_is_cancelled():
    checker = ArgumentChecker(EXPONENTIAL)
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def check() -> None:
        try:
            checker.problems({"t": nested(40)}, cancel=cancel)
        except BaseException as exc:  # recorded for the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=check)
    worker.start()
    cancel.set()
    worker.join(10)
    assert not worker.is_alive()
    assert [type(exc) for exc in outcome] == [RequestCancelled]


def test_problems_are_capped_and_each_is_cut_to_a_readable_length():
    checker = ArgumentChecker({"type": "object", "additionalProperties": {"type": "integer"}})
    problems = checker.problems({f"k{i}": "v" * 10_000 for i in range(100)})
    assert len(problems) == MAX_PROBLEMS + 1 and problems[-1] == "(more problems not listed)"
    assert all(len(problem) < 400 and "[cut: " in problem for problem in problems[:-1])
