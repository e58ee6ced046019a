"""The shape and size of the gateway tools' answers: object results, the token budget, the message limit."""

from __future__ import annotations

import json
import math
from typing import Any

from .framing import encode

# Room for the JSON-RPC envelope around a result (jsonrpc, id, newline) within the message limit.
ENVELOPE_BYTES = 1024


def object_result(value: dict[str, Any]) -> dict[str, Any]:
    """A tool result carrying `value` both as structuredContent and as one JSON text block."""
    return {
        "content": [{"type": "text", "text": json.dumps(value, ensure_ascii=False)}],
        "structuredContent": value,
        "isError": False,
    }


def estimate_tokens(value: Any) -> int:
    return math.ceil(len(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) / 4)


def within_budget(matched: list[dict], budget: int | None) -> dict:
    """The first tools of `matched` whose estimated tokens fit `budget`, and what was left out."""
    returned, used = [], 0
    for tool in matched:
        cost = estimate_tokens(tool)
        if budget is not None and used + cost > budget:
            listing = {"tools": returned, "matched": len(matched), "tokens_used": used}
            listing["note"] = (
                f"{len(matched)} tool(s) matched; the max_schema_tokens budget of {budget} stopped after "
                f"{len(returned)} (the next needs {cost} tokens): raise the budget or narrow names/pattern")
            return listing
        returned.append(tool)
        used += cost
    return {"tools": returned, "matched": len(matched), "tokens_used": used}


def fit_listing(listing: dict, limit: int | None) -> dict:
    """The listing with as many of its tools as fit the message limit, saying how many did not."""
    tools = listing["tools"]

    def answer(count: int) -> dict:
        kept = tools[:count]
        if count == len(tools):
            return {**listing, "returned": count}
        note = (f"{len(tools) - count} more tool(s) left out: the answer would exceed the gateway's "
                f"message limit of {limit} bytes; ask for fewer with names or pattern")
        return {**listing, "tools": kept, "returned": count,
                "tokens_used": sum(estimate_tokens(t) for t in kept), "note": note}

    def fits(count: int) -> bool:
        return len(encode(object_result(answer(count)))) + ENVELOPE_BYTES <= limit

    if limit is None or fits(len(tools)):
        return answer(len(tools))
    low, high = 0, len(tools) - 1  # the most that fit lies in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return answer(low)
