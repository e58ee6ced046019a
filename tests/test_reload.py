"""The Reloader on its own: real files, a real store, no gateway process."""

from __future__ import annotations

import json
import logging
import os
import queue
import threading

import pytest

from gateway_lib import config, store as config_store
from gateway_lib.reload import GATEWAY_RULES, MCP_CONFIG, Reloader

SECRET = "sk-do-not-log-me"


class RecordingAudit:
    def __init__(self):
        self.records: list[dict] = []

    def record(self, event: str, **fields) -> None:
        self.records.append({"event": event, **fields})


def write(path, obj) -> None:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=2), encoding="utf-8")


@pytest.fixture
def setup(tmp_path):
    mcp, rules = tmp_path / ".mcp.json", tmp_path / ".mcp-gateway-rules.json"
    write(mcp, {"mcpServers": {"a": {"command": "a-cmd"}, "b": {"command": "b-cmd"}}})
    write(rules, {"agents": {"dev": {"allow": {"servers": ["a"]}}}})
    store = config_store.ConfigStore(config_store.build_snapshot(config.load_servers(str(mcp), {}), config.load_rules(str(rules))))
    audit = RecordingAudit()
    return mcp, rules, store, audit, Reloader(store, mcp, rules, {}, audit)


def test_a_valid_rules_file_is_swapped_in_and_the_servers_are_left_alone(setup):
    mcp, rules, store, audit, reloader = setup
    before = store.current()
    write(rules, {"agents": {"ops": {"allow": {"servers": ["b"]}}}})
    assert reloader.reload_rules() is True
    after = store.current()
    assert list(after.rules.agents) == ["ops"]
    assert after.servers is before.servers
    assert list(before.rules.agents) == ["dev"]  # the old snapshot was not touched
    status = reloader.status()[GATEWAY_RULES]
    assert (status["attempt_count"], status["success_count"], status["last_error"]) == (2, 2, None)
    assert status["path"] == str(rules)


@pytest.mark.parametrize(
    "content, where",
    [
        ('{"agents": {"dev": {"allow": ', ":1: $: not valid JSON"),
        ("", ": $: file is empty"),
        ('{\n  "agents": {\n    "dev": {"alow": {}}\n  }\n}', ":3: $.agents.dev.alow: unknown key 'alow'"),
    ],
    ids=["truncated", "empty", "schema violation"],
)
def test_an_invalid_file_keeps_the_config_in_force_and_is_recorded(setup, content, where):
    mcp, rules, store, audit, reloader = setup
    before = store.current()
    write(rules, content)
    assert reloader.reload_rules() is False
    assert store.current() is before
    status = reloader.status()[GATEWAY_RULES]
    assert (status["attempt_count"], status["success_count"]) == (2, 1)
    assert status["last_error"].startswith(str(rules) + where)
    assert status["last_attempt"] >= status["last_success"]
    assert audit.records[-1]["outcome"] == "rejected" and audit.records[-1]["file"] == GATEWAY_RULES


def test_a_missing_file_keeps_the_config_and_is_picked_up_when_it_returns(setup):
    mcp, rules, store, audit, reloader = setup
    rules.unlink()
    assert reloader.reload_rules() is False
    assert "file not found" in reloader.status()[GATEWAY_RULES]["last_error"]
    assert list(store.current().rules.agents) == ["dev"]
    write(rules, {"agents": {"back": {}}})
    assert reloader.reload_rules() is True
    assert list(store.current().rules.agents) == ["back"]
    assert reloader.status()[GATEWAY_RULES]["last_error"] is None


def test_servers_listeners_hear_the_new_servers_after_each_servers_swap_only(setup):
    mcp, rules, store, audit, reloader = setup
    heard = []
    reloader.add_servers_listener(lambda servers: heard.append(sorted(servers)))
    write(mcp, {"mcpServers": {"a": {"command": "a-cmd"}}})
    reloader.reload_servers()
    reloader.reload_rules()
    write(mcp, "{")
    reloader.reload_servers()
    assert heard == [["a"]]


def test_a_listener_that_raises_does_not_break_reloading_or_other_listeners(setup):
    mcp, rules, store, audit, reloader = setup
    heard = []

    def broken(servers):
        raise RuntimeError("deliberate failure in a listener")

    reloader.add_servers_listener(broken)
    reloader.add_servers_listener(lambda servers: heard.append(sorted(servers)))
    write(mcp, {"mcpServers": {"c": {"command": "c-cmd"}}})
    assert reloader.reload_servers() is True
    assert heard == [["c"]]
    assert sorted(store.current().servers.servers) == ["c"]


def test_warnings_for_undefined_servers_are_listed_and_cleared_when_fixed(setup):
    mcp, rules, store, audit, reloader = setup
    write(rules, {"agents": {"dev": {"allow": {"servers": ["a", "pg"]}}}})
    assert reloader.reload_rules() is True
    assert reloader.status()[GATEWAY_RULES]["warnings"] == [
        "Rule agents.dev.allow.servers[1] names server 'pg' which is not defined in .mcp.json"
    ]
    assert audit.records[-1]["warnings"] == reloader.status()[GATEWAY_RULES]["warnings"]
    write(mcp, {"mcpServers": {"a": {"command": "a-cmd"}, "pg": {"command": "pg-cmd"}}})
    assert reloader.reload_servers() is True
    assert reloader.status()[GATEWAY_RULES]["warnings"] == []


def test_an_unusable_server_is_a_warning_of_the_servers_file(setup):
    mcp, rules, store, audit, reloader = setup
    write(mcp, {"mcpServers": {"a": {"command": "${NOT_SET_ANYWHERE}"}}})
    assert reloader.reload_servers() is True
    assert reloader.status()[MCP_CONFIG]["warnings"] == [
        "Server 'a' needs environment variable 'NOT_SET_ANYWHERE', which is not set"
    ]


def test_every_attempt_is_audited_without_values_from_the_file(setup):
    mcp, rules, store, audit, reloader = setup
    write(mcp, {"mcpServers": {"a": {"command": "a-cmd", "env": {"KEY": SECRET}}}})
    reloader.reload_servers()
    write(mcp, {"mcpServers": {"a": {"command": "a-cmd", "env": {"KEY": [SECRET]}}}})
    reloader.reload_servers()
    assert [(r["event"], r["file"], r["outcome"]) for r in audit.records] == [
        ("config_reload", MCP_CONFIG, "applied"),
        ("config_reload", MCP_CONFIG, "rejected"),
    ]
    assert "$.mcpServers.a.env.KEY" in audit.records[1]["error"]
    assert SECRET not in json.dumps(audit.records)
    assert SECRET not in reloader.status()[MCP_CONFIG]["last_error"]


def test_reload_all_reloads_each_file_even_when_the_other_fails(setup):
    mcp, rules, store, audit, reloader = setup
    write(mcp, "not json")
    write(rules, {"agents": {"ops": {}}})
    assert reloader.reload_all() is False
    assert list(store.current().rules.agents) == ["ops"]
    assert sorted(store.current().servers.servers) == ["a", "b"]


def test_a_reload_logs_each_warning_once(setup, caplog):
    mcp, rules, store, audit, reloader = setup
    write(mcp, {"mcpServers": {"a": {"command": "${NOT_SET_ANYWHERE}"}}})
    with caplog.at_level(logging.WARNING, logger="gateway_lib"):
        assert reloader.reload_servers() is True
    logged = [record for record in caplog.records if "NOT_SET_ANYWHERE" in record.getMessage()]
    assert len(logged) == 1


@pytest.mark.parametrize("kind", [MCP_CONFIG, GATEWAY_RULES])
def test_a_config_replaced_by_a_fifo_is_rejected_at_once_and_the_config_stays(setup, kind):
    mcp, rules, store, audit, reloader = setup
    path = mcp if kind == MCP_CONFIG else rules
    before = store.current()
    path.unlink()
    os.mkfifo(path)  # nobody writes to it: reading it would block for ever
    done: queue.Queue = queue.Queue()
    reload = reloader.reload_servers if kind == MCP_CONFIG else reloader.reload_rules
    threading.Thread(target=lambda: done.put(reload()), name="test-fifo-reload", daemon=True).start()
    assert done.get(timeout=10) is False
    assert store.current() is before
    assert "FIFO" in reloader.status()[kind]["last_error"]
