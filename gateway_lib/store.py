"""Whole config snapshots: the warnings that need both files, and the store that swaps them.

A reload builds a new Snapshot and swaps one reference under the store's RLock; nothing is
ever changed in place, so a request that took a snapshot keeps a consistent view.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterable

from . import policy
from .locate import MCP_CONFIG_NAME
from .model import AgentRules, RulesConfig, ServersConfig, Snapshot


# The two files, as reload status and warnings_by_file name them.
MCP_CONFIG = "mcp_config"
GATEWAY_RULES = "gateway_rules"


def undefined_server_warnings(servers: ServersConfig, rules: RulesConfig) -> tuple[str, ...]:
    """Rules naming servers that .mcp.json does not define: allowed, but worth a warning."""
    file_name = Path(servers.path).name or MCP_CONFIG_NAME
    warnings = set()
    for agent_id, agent in rules.agents.items():
        for rule, server in _named_servers(agent_id, agent):
            if server not in servers.servers:
                warnings.add(
                    f"Rule {rule} names server {server!r} which is not defined in {file_name}"
                )
    return tuple(sorted(warnings))


def _named_servers(agent_id: str, agent: AgentRules) -> Iterable[tuple[str, str]]:
    """(rule path, server) for every exact server name in an agent's rules."""
    for kind, patterns in (("allow", agent.allow_servers), ("deny", agent.deny_servers)):
        for index, pattern in enumerate(patterns):
            if not policy.is_wildcard(pattern):
                yield policy.rule_path("agents", agent_id, kind, "servers", index), pattern
    for kind, tools in (("allow", agent.allow_tools), ("deny", agent.deny_tools)):
        for key in tools:
            if key != policy.ALL_SERVERS_KEY:
                yield policy.rule_path("agents", agent_id, kind, "tools", key), key


def build_snapshot(servers: ServersConfig, rules: RulesConfig) -> Snapshot:
    return Snapshot(servers=servers, rules=rules,
                    rule_warnings=undefined_server_warnings(servers, rules))


def warnings_by_file(snapshot: Snapshot) -> dict[str, list[str]]:
    """snapshot.warnings split by the file each belongs to."""
    return {MCP_CONFIG: list(snapshot.servers.warnings), GATEWAY_RULES: list(snapshot.rule_warnings)}


class ConfigStore:
    """Holds the current snapshot. A reload builds a new one and swaps the reference, so a
    request that already took a snapshot keeps a consistent view until it ends."""

    def __init__(self, snapshot: Snapshot):
        self._lock = threading.RLock()
        self._snapshot = snapshot

    def current(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def replace_servers(self, servers: ServersConfig) -> Snapshot:
        with self._lock:
            self._snapshot = build_snapshot(servers, self._snapshot.rules)
            return self._snapshot

    def replace_rules(self, rules: RulesConfig) -> Snapshot:
        with self._lock:
            self._snapshot = build_snapshot(self._snapshot.servers, rules)
            return self._snapshot
