"""Result budgets: fit a downstream tool result into a token budget before it reaches the agent.

Tokens are estimated as characters / 4. What counts against the budget is what the model
reads: the characters of each text block, the JSON of every other block, and the JSON of
`structuredContent`. Text is cut at a character boundary; images, audio and resources are
kept whole unless one alone is over the budget; `structuredContent` is dropped when a text
block carries the same data. Every change is said in a final text block (the note), which
does not count against the budget. An `isError` result keeps at least MIN_ERROR_CHARS, so
the model can always read why a call failed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_RESULT_TOKENS = 25_000
CHARS_PER_TOKEN = 4
MIN_ERROR_CHARS = 2_000
NOTE_PREFIX = "[agent-mcp-gateway] "


@dataclass(frozen=True)
class Fitted:
    """A result after budgeting, with the sizes the audit line records."""

    result: dict[str, Any]
    result_chars: int  # the whole downstream result as compact JSON
    returned_chars: int  # the whole result passed on, note included
    cut: bool


def compact_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def resolve_tokens(requested: int | None, server_tokens: int | None, gateway_tokens: int,
                   cap_tokens: int | None) -> int:
    """The call's budget: the execute_tool argument, else the server entry's, else the gateway's.

    An argument may ask for more than the default, but never for more than the message cap.
    """
    tokens = requested or server_tokens or gateway_tokens
    return min(tokens, cap_tokens) if cap_tokens else tokens


def _block_cost(block: Any) -> int:
    if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
        return len(block["text"])
    return compact_size(block)


def _is_text(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str)


def _same_data_in_text(structured: Any, content: list[Any]) -> bool:
    for block in content:
        if _is_text(block):
            try:
                if json.loads(block["text"]) == structured:
                    return True
            except ValueError:
                continue
    return False


def _cost(content: list[Any], structured: Any) -> int:
    return sum(_block_cost(b) for b in content) + (compact_size(structured) if structured is not None else 0)


def fit(result: dict[str, Any], max_tokens: int, cap_tokens: int | None = None) -> Fitted:
    """`result` cut to `max_tokens`; returned unchanged (the same object) when it fits."""
    original_chars = compact_size(result)
    content = result.get("content")
    if not isinstance(content, list):
        return Fitted(result, original_chars, original_chars, cut=False)
    structured = result.get("structuredContent")
    budget = max_tokens * CHARS_PER_TOKEN
    if result.get("isError"):
        budget = max(budget, MIN_ERROR_CHARS)
    total = _cost(content, structured)
    if total <= budget:
        return Fitted(result, original_chars, original_chars, cut=False)

    notes: list[str] = []
    fitted = {key: value for key, value in result.items() if key != "structuredContent"}
    if structured is not None and not _same_data_in_text(structured, content):
        fitted["structuredContent"] = structured
        remaining = budget - compact_size(structured)
    else:
        remaining = budget
        if structured is not None:
            notes.append("structuredContent was left out: a text block carries the same data.")

    # Media first: it is kept whole, so the text gets what it leaves.
    kept_media = {}
    for index, block in enumerate(content):
        if _is_text(block):
            continue
        cost = _block_cost(block)
        if cost > budget:
            kind = block.get("type", "unknown") if isinstance(block, dict) else "unknown"
            notes.append(f"A {kind} block of {cost} characters was left out: it alone exceeds the budget.")
        else:
            kept_media[index] = block
            remaining -= cost

    blocks, text_total, text_cut = [], 0, 0
    for index, block in enumerate(content):
        if index in kept_media:
            blocks.append(block)
        elif _is_text(block):
            text = block["text"]
            text_total += len(text)
            keep = max(min(len(text), remaining), 0)
            remaining -= keep
            text_cut += len(text) - keep
            if keep:
                blocks.append(block if keep == len(text) else {**block, "text": text[:keep]})
    if text_cut:
        notes.append(f"{text_cut} of {text_total} characters of text were cut.")
    wanted = math.ceil(total / CHARS_PER_TOKEN)
    more = f"call execute_tool again with max_result_tokens={min(wanted, cap_tokens) if cap_tokens else wanted}"
    ask = f"to get more, {more}" if not cap_tokens or wanted <= cap_tokens else \
        f"the whole result exceeds the gateway's message limit; at most, {more}, or ask the tool for less"
    notes.append(f"The result was {wanted} tokens, over this call's budget of {max_tokens}; {ask}.")
    blocks.append({"type": "text", "text": NOTE_PREFIX + " ".join(notes)})
    fitted["content"] = blocks
    return Fitted(fitted, original_chars, compact_size(fitted), cut=True)
