"""Access decisions: which agent may reach which server and tool.

Pure functions over a RulesConfig: no I/O, no logging, no clocks, so every decision can be
tested as a table and audited by reading this file alone.

Precedence, for server names and again for tool names:

    1. explicit deny     a pattern without '*' equal to the name
    2. explicit allow
    3. wildcard deny     '*', 'prefix*' or '*suffix' matching the name
    4. wildcard allow
    5. default deny

Every Decision names the rule that produced it as a path into the rules file, so a denial
can tell the agent (and the audit log) exactly which line to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from . import errors
from .jsonfile import quote
from .model import AgentRules, RulesConfig

# An explicit ASCII class with fullmatch: `\w` would admit Unicode letters (a Cyrillic 'а'
# looks exactly like a Latin 'a'), and `$` would accept a trailing newline.
AGENT_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")

# The rule named when nothing matched.
DEFAULT_DENY = "default-deny"

WILDCARD = "*"
ALL_SERVERS_KEY = "*"  # the allow.tools / deny.tools key that applies to every server


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str  # e.g. "agents.backend.deny.tools.postgres[0]", or DEFAULT_DENY


# ---------------------------------------------------------------------------- patterns


def is_valid_agent_id(agent_id: object) -> bool:
    return isinstance(agent_id, str) and AGENT_ID_PATTERN.fullmatch(agent_id) is not None


def is_valid_pattern(pattern: str) -> bool:
    """'*', 'prefix*', '*suffix' or a non-empty exact name; '*' anywhere else is refused."""
    if not isinstance(pattern, str) or not pattern:
        return False
    if pattern == WILDCARD:
        return True
    body = pattern
    if body.startswith(WILDCARD):
        body = body[1:]
    elif body.endswith(WILDCARD):
        body = body[:-1]
    return bool(body) and WILDCARD not in body


def pattern_message(pattern: str) -> str:
    """What is wrong with a pattern that is_valid_pattern refuses, and what to write instead."""
    return f"pattern {quote(pattern)} is not allowed: use '*', 'prefix*', '*suffix' or an exact name"


def is_wildcard(pattern: str) -> bool:
    return WILDCARD in pattern


def matches(pattern: str, name: str) -> bool:
    """Case-sensitive match; only a leading or trailing '*' is special, nothing else is."""
    if pattern == WILDCARD:
        return True
    if pattern.endswith(WILDCARD):
        return name.startswith(pattern[:-1])
    if pattern.startswith(WILDCARD):
        return name.endswith(pattern[1:])
    return name == pattern


# ---------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class _PatternList:
    """Patterns at one place in the rules file, e.g. agents.a.deny.tools.*."""

    path: tuple[str, ...]
    patterns: tuple[str, ...]


def _first_match(lists: Iterable[_PatternList], name: str, *, explicit: bool) -> str | None:
    """Rule path of the first explicit (or the first wildcard) pattern matching `name`."""
    for plist in lists:
        for index, pattern in enumerate(plist.patterns):
            if is_wildcard(pattern) == explicit:
                continue
            if matches(pattern, name):
                return rule_path(*plist.path, index)
    return None


def _apply_precedence(
    deny: list[_PatternList], allow: list[_PatternList], name: str
) -> Decision | None:
    """Levels 1-4 of the precedence; None when no pattern matched at all."""
    levels = ((deny, True, False), (allow, True, True), (deny, False, False), (allow, False, True))
    for lists, explicit, allowed in levels:
        rule = _first_match(lists, name, explicit=explicit)
        if rule is not None:
            return Decision(allowed=allowed, rule=rule)
    return None


def rule_path(*parts: str | int) -> str:
    """A place in the rules file as denials name it: ("agents", "a", "deny", "servers", 0)
    -> "agents.a.deny.servers[0]". Dotted, not a JSON path: it is what a reader searches for."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts).lstrip(".")


def decide_server(rules: RulesConfig, agent_id: str, server: str) -> Decision:
    agent = rules.agents.get(agent_id)
    if agent is None:
        return Decision(allowed=False, rule=DEFAULT_DENY)
    deny = [_PatternList(("agents", agent_id, "deny", "servers"), agent.deny_servers)]
    allow = [_PatternList(("agents", agent_id, "allow", "servers"), agent.allow_servers)]
    return _apply_precedence(deny, allow, server) or Decision(allowed=False, rule=DEFAULT_DENY)


def _tool_lists(
    tools: Mapping[str, tuple[str, ...]], path: tuple[str, ...], server: str
) -> list[_PatternList]:
    """The lists that apply to `server`: its own key first, then the every-server key."""
    keys = [server] if server == ALL_SERVERS_KEY else [server, ALL_SERVERS_KEY]
    return [_PatternList((*path, key), tools[key]) for key in keys if key in tools]


def decide_tool(rules: RulesConfig, agent_id: str, server: str, tool: str) -> Decision:
    server_decision = decide_server(rules, agent_id, server)
    if not server_decision.allowed:
        return server_decision
    agent: AgentRules = rules.agents[agent_id]
    deny = _tool_lists(agent.deny_tools, ("agents", agent_id, "deny", "tools"), server)
    allow = _tool_lists(agent.allow_tools, ("agents", agent_id, "allow", "tools"), server)
    decided = _apply_precedence(deny, allow, tool)
    if decided is not None:
        return decided
    if not allow:
        # No tool allow-list for this server: allowing the server allows its tools.
        return server_decision
    return Decision(allowed=False, rule=DEFAULT_DENY)


CLIENT_REQUEST_KINDS = ("sampling", "elicitation", "roots")


def decide_client_request(rules: RulesConfig, agent_id: str | None, kind: str) -> Decision:
    """Whether a downstream may send a `kind` request to the client during this agent's call.

    An unwritten allow list allows every kind; a deny entry beats any allow.
    """
    agent = rules.agents.get(agent_id) if agent_id is not None else None
    if agent is None or kind not in CLIENT_REQUEST_KINDS:
        return Decision(allowed=False, rule=DEFAULT_DENY)
    if kind in agent.deny_client_requests:
        return Decision(False, rule_path("agents", agent_id, "deny", "client_requests",
                                         agent.deny_client_requests.index(kind)))
    if agent.allow_client_requests is None:
        return Decision(True, rule_path("agents", agent_id, "allow", "client_requests") + " (not set: all allowed)")
    if kind in agent.allow_client_requests:
        return Decision(True, rule_path("agents", agent_id, "allow", "client_requests",
                                        agent.allow_client_requests.index(kind)))
    return Decision(False, rule_path("agents", agent_id, "allow", "client_requests"))


# ---------------------------------------------------------------------------- identity


def _require_defined(
    rules: RulesConfig, agent_id: str, error: type[errors.GatewayError], message: str
) -> str:
    if agent_id not in rules.agents:
        raise error(message)
    return agent_id


def resolve_agent(
    rules: RulesConfig,
    requested: str | None,
    *,
    default_agent: str | None,
    pinned: str | None,
    authenticated: str | None = None,
) -> str:
    """The agent a call acts as. Fails closed: a bad id never falls back to a default.

    `authenticated` is the agent a transport proved (an HTTP bearer token's owner): the
    call acts as it, and an `agent_id` or pin naming anyone else is refused.
    """
    if authenticated is not None:
        return _resolve_authenticated(rules, requested, authenticated, pinned)
    if pinned is not None:
        return _resolve_pinned(rules, requested, pinned)
    if requested is not None:
        return _resolve_requested(rules, requested)
    return _resolve_fallback(rules, default_agent)


def _resolve_authenticated(rules: RulesConfig, requested: str | None, authenticated: str, pinned: str | None) -> str:
    if pinned is not None and pinned != authenticated:
        raise errors.InvalidAgentId(
            f"The bearer token belongs to agent {quote(authenticated)}; this gateway is pinned to {quote(pinned)}"
        )
    return _resolve_as(rules, requested, authenticated, f"The bearer token belongs to agent {quote(authenticated)}")


def _resolve_pinned(rules: RulesConfig, requested: str | None, pinned: str) -> str:
    return _resolve_as(rules, requested, pinned, f"This gateway is pinned to agent {quote(pinned)}")


def _resolve_as(rules: RulesConfig, requested: str | None, agent: str, said: str) -> str:
    """The one agent a call must act as (pinned, or proved by a token): any other agent_id is refused."""
    if requested is not None and requested != agent:
        raise errors.InvalidAgentId(f"{said}; agent_id {quote(requested)} is refused")
    return _require_defined(rules, agent, errors.InvalidAgentId, f"{said}, which is not defined in the rules")


def _resolve_requested(rules: RulesConfig, requested: object) -> str:
    if not isinstance(requested, str) or not is_valid_agent_id(requested):
        raise errors.InvalidAgentId(
            f"agent_id {quote(requested)} is not valid: use only letters, digits, '_', '.', '-'"
        )
    return _require_defined(
        rules, requested, errors.InvalidAgentId,
        f"agent_id {quote(requested)} is not defined in the gateway rules",
    )


def _resolve_fallback(rules: RulesConfig, default_agent: str | None) -> str:
    if rules.deny_on_missing_agent:
        raise errors.InvalidAgentId(
            "agent_id is required: the gateway rules set deny_on_missing_agent, so pass agent_id"
        )
    if default_agent is not None:
        return _require_defined(
            rules, default_agent, errors.FallbackAgentNotInRules,
            f"GATEWAY_DEFAULT_AGENT names agent {quote(default_agent)}, "
            "which is not defined in the gateway rules",
        )
    if "default" in rules.agents:
        return "default"
    raise errors.NoFallbackConfigured(
        "agent_id was not given and no fallback is configured: pass agent_id, "
        "set GATEWAY_DEFAULT_AGENT, or define an agent named 'default' in the rules"
    )
