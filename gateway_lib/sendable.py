"""Whether a JSON value can be passed on exactly: no lone surrogate, no infinite number, not too deep.

Python's json module reads all three (`"\\ud800"`, `1e400` as infinity, any depth), but no
UTF-8 message can carry a lone surrogate, JSON has no infinity (the SDK would send `null`),
and the SDK's serializer gives up past about 250 levels. Finding them first lets the gateway
refuse a call, or a config file, before any server starts, saying where the value is.
"""

from __future__ import annotations

import math
from typing import Any

from .jsonfile import JsonPath, format_json_path

MAX_DEPTH = 128  # levels of arrays and objects in a tool call's arguments


def has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def unsendable(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """The first thing in `value` that cannot be passed on, as `$.path: reason`, or None.

    Iterative, so a value nested far deeper than the interpreter's recursion limit is
    judged like any other.
    """
    stack: list[tuple[JsonPath, Any]] = [((), value)]
    while stack:
        path, node = stack.pop()
        if len(path) > max_depth:
            return f"{format_json_path(path[:max_depth])}: nested more than {max_depth} levels deep"
        if isinstance(node, dict):
            for key, item in node.items():
                if has_lone_surrogate(key):
                    return (f"{format_json_path(path)}: a key contains a lone surrogate (\\ud800-\\udfff), "
                            "which cannot be sent as UTF-8")
                stack.append((path + (key,), item))
        elif isinstance(node, list):
            stack.extend((path + (index,), item) for index, item in enumerate(node))
        elif isinstance(node, str) and has_lone_surrogate(node):
            return f"{format_json_path(path)}: contains a lone surrogate (\\ud800-\\udfff), which cannot be sent as UTF-8"
        elif isinstance(node, float) and not math.isfinite(node):
            return f"{format_json_path(path)}: the number is too large to be represented (JSON has no infinity)"
    return None
