"""Result budgets: an oversized downstream result is cut to the call's token budget, with a note.

The gateway runs as a process with a real SDK client; the downstream server is
tests/servers/shaped_server.py, which returns text, images and structured content of a size
the test asks for.
"""

from __future__ import annotations

import json

import mcp_types
import pytest

import harness
from gateway_lib import budget
from servers import shaped_server

RULES = {"agents": {"dev": {"allow": {"servers": ["*"]}}}}


@pytest.fixture
def start(config_dir, tag):
    opened = []

    def start_gateway(server_entry: dict | None = None, env: dict | None = None) -> harness.Gateway:
        config_dir.write({"shaped": shaped_server.entry(tag, **(server_entry or {}))}, RULES)
        gw = config_dir.gateway("--audit-log", str(config_dir.path("audit.jsonl")), env=env)
        gw.start()
        opened.append(gw)
        return gw

    yield start_gateway
    for gw in opened:
        gw.close()


@pytest.fixture(scope="module")
def gw(shared_dir):
    """One gateway with the default budget for every test that only calls it: a budget is
    applied per call, from the call's own arguments."""
    config = shared_dir.config_dir
    config.write({"shaped": shaped_server.entry(shared_dir.tag)}, RULES)
    with config.gateway("--audit-log", str(config.path("audit.jsonl")), env=shared_dir.env) as gateway:
        yield gateway


def call(gw: harness.Gateway, tool: str, **arguments) -> mcp_types.CallToolResult:
    extra = {key: arguments.pop(key) for key in ("max_result_tokens",) if key in arguments}
    return gw.call_tool("execute_tool", {"agent_id": "dev", "server": "shaped", "tool": tool,
                                         "args": arguments, **extra})


def texts(result) -> list[str]:
    return [block.text for block in result.content if isinstance(block, mcp_types.TextContent)]


def audit_calls(config_dir) -> list[dict]:
    return [r for r in harness.read_log(config_dir.path("audit.jsonl")) if r.get("tool") == "execute_tool"]


def test_text_over_the_budget_is_cut_at_it_with_a_final_note_on_how_to_ask_for_more(gw, shared_dir):
    result = call(gw, "big_text", size=30_000, blocks=5, max_result_tokens=10_000)
    *kept, note = texts(result)
    assert sum(len(t) for t in kept) == 10_000 * budget.CHARS_PER_TOKEN
    assert kept[0] == "a" * 30_000 and kept[1] == "b" * 10_000
    assert note.startswith(budget.NOTE_PREFIX)
    assert "110000 of 150000 characters" in note and "max_result_tokens=37500" in note
    record = audit_calls(shared_dir.config_dir)[-1]
    assert record["result_chars"] > 150_000
    assert record["returned_chars"] == len(json.dumps(result.model_dump(by_alias=True, exclude_none=True,
                                                                         exclude={"result_type"}),
                                                      ensure_ascii=False, separators=(",", ":")))


def test_a_result_within_the_budget_passes_unchanged_and_the_audit_says_nothing_was_cut(gw, shared_dir):
    result = call(gw, "big_text", size=1_000)
    assert texts(result) == ["a" * 1_000]
    record = audit_calls(shared_dir.config_dir)[-1]
    assert record["result_chars"] == record["returned_chars"]


def test_the_default_budget_is_25000_tokens_and_the_argument_may_ask_for_more(gw):
    assert sum(map(len, texts(call(gw, "big_text", size=120_000))[:-1])) == 25_000 * 4
    assert texts(call(gw, "big_text", size=120_000, max_result_tokens=40_000)) == ["a" * 120_000]


def test_the_server_entry_and_the_environment_set_the_budget_and_the_argument_overrides_both(start):
    by_entry = start({"max_result_tokens": 100})
    assert sum(map(len, texts(call(by_entry, "big_text", size=5_000))[:-1])) == 400
    assert texts(call(by_entry, "big_text", size=5_000, max_result_tokens=2_000)) == ["a" * 5_000]
    by_env = start(env={"GATEWAY_MAX_RESULT_TOKENS": "50"})
    assert sum(map(len, texts(call(by_env, "big_text", size=5_000))[:-1])) == 200


def test_the_argument_cannot_ask_for_more_than_the_message_limit():
    assert budget.resolve_tokens(1_000_000, None, 25_000, cap_tokens=10_000) == 10_000
    assert budget.resolve_tokens(None, 300, 25_000, cap_tokens=10_000) == 300


def test_an_image_is_kept_whole_while_the_text_beside_it_is_cut(gw):
    result = call(gw, "big_image", size=2_000, max_result_tokens=600)
    image = [b for b in result.content if isinstance(b, mcp_types.ImageContent)]
    assert len(image) == 1 and len(image[0].data) == 2_000
    caption, note = texts(result)
    image_cost = len(json.dumps(image[0].model_dump(by_alias=True, exclude_none=True), separators=(",", ":")))
    assert caption == "c" * (600 * budget.CHARS_PER_TOKEN - image_cost)
    assert budget.NOTE_PREFIX in note


def test_an_image_alone_over_the_budget_is_replaced_by_a_block_that_says_so(gw):
    result = call(gw, "big_image", size=8_000, max_result_tokens=1_000)
    assert not [b for b in result.content if isinstance(b, mcp_types.ImageContent)]
    caption, note = texts(result)
    assert caption == "c" * 1_000 * budget.CHARS_PER_TOKEN
    assert "image block" in note and "alone exceeds the budget" in note


def test_structured_content_is_dropped_with_a_note_when_the_text_carries_the_same_data(gw):
    whole = call(gw, "big_structured", size=2_000)
    assert whole.structured_content["items"]
    result = call(gw, "big_structured", size=2_000, max_result_tokens=600)
    assert result.structured_content is None
    data, note = texts(result)
    assert json.loads(data) == whole.structured_content
    assert "structuredContent was left out" in note


def test_an_error_result_is_never_cut_below_a_readable_length(gw):
    result = call(gw, "big_error", size=10_000, max_result_tokens=10)
    assert result.is_error
    message, note = texts(result)
    assert message == "E" * budget.MIN_ERROR_CHARS
    assert budget.NOTE_PREFIX in note


def test_fit_returns_the_same_object_when_the_result_is_within_budget():
    result = {"content": [{"type": "text", "text": "x" * 40}], "isError": False}
    assert budget.fit(result, 10).result is result
    assert budget.fit(result, 9).cut
