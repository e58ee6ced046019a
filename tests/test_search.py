"""Search across servers within policy: get_server_tools with `server` omitted (or "*") and a `query`.

Three fixture servers (tests/servers/shaped_server.py with tool lists of the test's choosing)
and one server the agent is denied, behind a gateway process and a real SDK client.
"""

from __future__ import annotations

import json

import pytest

import harness
from gateway_lib import search
from gateway_lib.errors import DENIED_BY_POLICY
from servers import shaped_server


def tool(name: str, description: str) -> dict:
    return {"name": name, "description": description, "inputSchema": {"type": "object"}}


TOOLS = {
    "files": [tool("read_file", "Read a file from disk."), tool("write_file", "Write a file to disk."),
              tool("list_directory", "List the entries of a directory.")],
    "notes": [tool("create_note", "Create a note."), tool("read_note", "Read one note by its id."),
              tool("delete_note", "Delete a note file forever.")],
    "clock": [tool("get_time", "The current time in a time zone.")],
    "secrets": [tool("read_secret_file", "Read a secret file: read file read file.")],
}
RULES = {"agents": {"dev": {
    "allow": {"servers": ["*"]},
    "deny": {"servers": ["secrets"], "tools": {"notes": ["delete_note"]}},
}}}


@pytest.fixture(scope="module")
def gateway(shared_dir):
    """One gateway for every test here: each only searches."""
    config_dir, servers = shared_dir.config_dir, {}
    for name, tools in TOOLS.items():
        path = harness.write_json(config_dir.path(f"{name}.tools.json"), tools)
        servers[name] = shaped_server.entry(shared_dir.tag, path, description=f"The {name} server")
    config_dir.write(servers, RULES)
    with config_dir.gateway(env=shared_dir.env) as gw:
        yield gw


def find(gw: harness.Gateway, **arguments) -> dict:
    return gw.call_json("get_server_tools", {"agent_id": "dev", **arguments})


def test_a_query_returns_the_best_matching_tools_across_servers_each_with_its_server_and_score(gateway):
    found = find(gateway, query="read file")
    ranked = [(t["server"], t["name"]) for t in found["tools"]]
    assert ranked[0] == ("files", "read_file")
    assert set(ranked) == {("files", "read_file"), ("files", "write_file"), ("notes", "read_note")}
    scores = [t["score"] for t in found["tools"]]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    assert found["tools"][0]["matched"] == ["read", "file"]
    assert found["tools"][0]["inputSchema"] == {"type": "object"}


def test_denied_servers_and_tools_never_appear_not_even_in_counts(gateway):
    found = find(gateway, server="*", query="delete secret file read")
    names = {t["name"] for t in found["tools"]}
    assert "read_secret_file" not in names and "delete_note" not in names
    assert found["servers_searched"] == ["clock", "files", "notes"]
    assert found["total_available"] == 6  # 3 + 2 + 1: neither denied tool is counted
    assert "secret" not in json.dumps({key: value for key, value in found.items() if key != "query"})


def test_limit_bounds_the_answer_and_defaults_to_five(gateway):
    assert find(gateway, query="file note directory time read write")["returned"] == 5
    limited = find(gateway, query="file note directory time read write", limit=2)
    assert limited["returned"] == 2 and limited["matched"] == 6


def test_names_and_pattern_work_across_servers_without_a_query(gateway):
    by_pattern = find(gateway, pattern="read_*")
    assert [(t["server"], t["name"]) for t in by_pattern["tools"]] == [("files", "read_file"), ("notes", "read_note")]
    by_names = find(gateway, names="get_time,create_note,read_secret_file")
    assert [t["name"] for t in by_names["tools"]] == ["get_time", "create_note"]


def test_a_query_on_one_server_ranks_its_tools_and_a_denied_server_is_refused(gateway):
    found = find(gateway, server="notes", query="read")
    assert [t["name"] for t in found["tools"]] == ["read_note"]
    refused = gateway.call_tool("get_server_tools", {"agent_id": "dev", "server": "secrets", "query": "read"})
    assert refused.is_error and refused.structured_content["error"]["code"] == DENIED_BY_POLICY


def test_a_server_that_cannot_be_listed_is_named_and_the_others_are_still_searched(config_dir, tag):
    path = harness.write_json(config_dir.path("files.tools.json"), TOOLS["files"])
    config_dir.write({"files": shaped_server.entry(tag, path),
                      "broken": harness.fault_server(tag, "--mode", "exit-at-once")}, RULES)
    with config_dir.gateway() as gw:
        found = find(gw, query="read")
    assert [t["name"] for t in found["tools"]] == ["read_file"]
    assert list(found["unavailable"]) == ["broken"]


def test_words_split_names_and_sentences_alike():
    assert search.words("readFile") == search.words("read_file") == search.words("Read file") == ["read", "file"]
    assert search.words("getHTTPStatus2") == ["get", "http", "status", "2"]
