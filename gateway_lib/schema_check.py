"""Validate a parsed config file against its JSON Schema, in words that say how to fix it.

jsonschema's own messages quote whole values (env, headers: secrets) and speak in schema
terms; each error is translated here into one Problem at the offending JSON path.
"""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any, Mapping

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from .errors import Problem
from .jsonfile import Document, JsonPath, format_json_path, quote

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
MCP_CONFIG_SCHEMA = "mcp-config.schema.json"
RULES_SCHEMA = "gateway-rules.schema.json"



@functools.lru_cache(maxsize=None)
def schema_validator(name: str) -> Draft202012Validator:
    """The validator for one schema file in SCHEMA_DIR (read once)."""
    schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


_TYPE_WORDS = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}

# Validators whose errors the semantic checks explain better, when they found the problem.
_EXPLAINED_BY_SEMANTICS = {"pattern", "oneOf"}

_MISSING_KEY_HINTS = {
    "mcpServers": 'add "mcpServers": { "<name>": { "command": ... } }',
    "agents": 'add "agents": { "<agent id>": { "allow": { "servers": [...] } } }',
}


_PYTHON_TYPE_WORDS = ((dict, "an object"), (list, "an array"), (str, "a string"),
                      (int, "a whole number"), (float, "a number"))


def _json_type(value: object) -> str:
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "true or false"
    for python_type, word in _PYTHON_TYPE_WORDS:
        if isinstance(value, python_type):
            return word
    return "null"


def schema_problems(
    document: Document, schema_name: str, explained: Mapping[str, Problem]
) -> list[Problem]:
    problems: list[Problem] = []
    for error in schema_validator(schema_name).iter_errors(document.data):
        problems.extend(_translate(document, error, explained))
    return problems


def _translate(
    document: Document, error: ValidationError, explained: Mapping[str, Problem]
) -> list[Problem]:
    """Turn one jsonschema error into problems that say how to fix it (no secret values)."""
    path: JsonPath = tuple(error.absolute_path)
    if "propertyNames" in error.schema_path:
        path = path + (error.instance,)  # the error is about the key, not the object
    if error.validator in _EXPLAINED_BY_SEMANTICS and format_json_path(path) in explained:
        return []
    if error.validator == "additionalProperties":
        return _unknown_key_problems(document, path, error)
    if error.validator == "required":
        return _missing_key_problems(document, path, error)
    return [document.problem(path, _message_for(error))]


def _message_for(error: ValidationError) -> str:
    validator, expected, value = error.validator, error.validator_value, error.instance
    if validator == "type":
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in _as_list(expected))
        return f"must be {wanted}, not {_json_type(value)}"
    if validator == "enum":
        choices = ", ".join(quote(choice) for choice in expected)
        return f"{quote(value)} is not allowed here: use one of {choices}"
    if validator == "minimum":
        return f"must be at least {expected}, not {value}"
    if validator == "minLength":
        return "must not be empty"
    if validator == "pattern":
        return f"{quote(value)} does not have the required form (regular expression {expected})"
    if validator == "oneOf":
        return "must match exactly one allowed shape"
    return f"breaks the schema rule {validator!r}"


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _unknown_key_problems(
    document: Document, path: JsonPath, error: ValidationError
) -> list[Problem]:
    known = sorted(error.schema.get("properties", {}))
    problems = []
    for key in error.instance:
        if key in known:
            continue
        message = f"unknown key {quote(key)}: allowed keys here are {', '.join(map(repr, known))}"
        problems.append(document.problem(path + (key,), message + did_you_mean(key, known)))
    return problems


def did_you_mean(key: str, known: list[str]) -> str:
    """' (did you mean 'session'?)' for the nearest known key, or '' when none is near."""
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _missing_key_problems(
    document: Document, path: JsonPath, error: ValidationError
) -> list[Problem]:
    problems = []
    for key in error.validator_value:
        if key not in error.instance:
            hint = _MISSING_KEY_HINTS.get(key, "add it")
            message = f"missing required key {key!r}: {hint}"
            problems.append(Problem(document.file, format_json_path(path + (key,)), message,
                                    document.line_of(path)))
    return problems
