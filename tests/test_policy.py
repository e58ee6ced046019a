"""Access decisions and agent identity: the precedence table, pattern forms, fallbacks."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from gateway_lib import errors, policy
from gateway_lib.model import AgentRules, RulesConfig
from gateway_lib.policy import DEFAULT_DENY, Decision


def frozen_tools(tools: dict[str, list[str]] | None) -> MappingProxyType:
    return MappingProxyType({key: tuple(value) for key, value in (tools or {}).items()})


def agent(
    allow_servers=(), deny_servers=(), allow_tools=None, deny_tools=None
) -> AgentRules:
    return AgentRules(
        allow_servers=tuple(allow_servers),
        deny_servers=tuple(deny_servers),
        allow_tools=frozen_tools(allow_tools),
        deny_tools=frozen_tools(deny_tools),
    )


def rules_with(agents: dict[str, AgentRules], deny_on_missing_agent: bool = False) -> RulesConfig:
    return RulesConfig(
        path="rules.json",
        agents=MappingProxyType(agents),
        deny_on_missing_agent=deny_on_missing_agent,
    )


# ============================================================================ servers

SERVER_CASES = [
    pytest.param(dict(allow_servers=["pg"], deny_servers=["pg"]), "pg",
                 Decision(False, "agents.a.deny.servers[0]"),
                 id="an explicit deny beats an explicit allow of the same server"),
    pytest.param(dict(allow_servers=["pg"], deny_servers=["*"]), "pg",
                 Decision(True, "agents.a.allow.servers[0]"),
                 id="an explicit allow beats a deny-everything wildcard"),
    pytest.param(dict(allow_servers=["pg"], deny_servers=["p*"]), "pg",
                 Decision(True, "agents.a.allow.servers[0]"),
                 id="an explicit allow beats a prefix wildcard deny"),
    pytest.param(dict(allow_servers=["*"], deny_servers=["pg"]), "pg",
                 Decision(False, "agents.a.deny.servers[0]"),
                 id="an explicit deny beats a wildcard allow"),
    pytest.param(dict(allow_servers=["p*"], deny_servers=["*g"]), "pg",
                 Decision(False, "agents.a.deny.servers[0]"),
                 id="a wildcard deny beats a wildcard allow"),
    pytest.param(dict(allow_servers=["*"], deny_servers=["other"]), "pg",
                 Decision(True, "agents.a.allow.servers[0]"),
                 id="a wildcard allow grants a server nothing else mentions"),
    pytest.param(dict(allow_servers=["other"]), "pg", Decision(False, DEFAULT_DENY),
                 id="a server no pattern matches is denied by default"),
    pytest.param(dict(), "pg", Decision(False, DEFAULT_DENY),
                 id="an agent without rules is denied every server"),
    pytest.param(dict(allow_servers=["x", "p*", "*"]), "pg",
                 Decision(True, "agents.a.allow.servers[1]"),
                 id="the first matching wildcard names the rule"),
    pytest.param(dict(allow_servers=["*", "pg"]), "pg",
                 Decision(True, "agents.a.allow.servers[1]"),
                 id="an explicit entry is named even when a wildcard comes first"),
    pytest.param(dict(deny_servers=["*"], allow_servers=["*"]), "pg",
                 Decision(False, "agents.a.deny.servers[0]"),
                 id="deny-everything beats allow-everything"),
    pytest.param(dict(allow_servers=["PG"]), "pg", Decision(False, DEFAULT_DENY),
                 id="server names are case-sensitive"),
]


@pytest.mark.parametrize("agent_rules, server, expected", SERVER_CASES)
def test_server_precedence(agent_rules, server, expected):
    rules = rules_with({"a": agent(**agent_rules)})
    assert policy.decide_server(rules, "a", server) == expected


def test_an_agent_missing_from_the_rules_is_denied_by_default():
    rules = rules_with({"a": agent(allow_servers=["*"])})
    assert policy.decide_server(rules, "b", "pg") == Decision(False, DEFAULT_DENY)
    assert policy.decide_tool(rules, "b", "pg", "t") == Decision(False, DEFAULT_DENY)


# ============================================================================ tools

TOOL_CASES = [
    pytest.param(dict(allow_tools={"pg": ["query"]}, deny_tools={"pg": ["query"]}), "query",
                 Decision(False, "agents.a.deny.tools.pg[0]"),
                 id="an explicit tool deny beats an explicit tool allow"),
    pytest.param(dict(allow_tools={"pg": ["query"]}, deny_tools={"*": ["query"]}), "query",
                 Decision(False, "agents.a.deny.tools.*[0]"),
                 id="an explicit deny under '*' beats an explicit allow under the server"),
    pytest.param(dict(allow_tools={"*": ["query"]}, deny_tools={"pg": ["*"]}), "query",
                 Decision(True, "agents.a.allow.tools.*[0]"),
                 id="an explicit allow under '*' beats a wildcard deny under the server"),
    pytest.param(dict(allow_tools={"pg": ["query"]}, deny_tools={"*": ["q*"]}), "query",
                 Decision(True, "agents.a.allow.tools.pg[0]"),
                 id="an explicit allow under the server beats a wildcard deny under '*'"),
    pytest.param(dict(allow_tools={"pg": ["*"]}, deny_tools={"pg": ["drop_*"]}), "drop_table",
                 Decision(False, "agents.a.deny.tools.pg[0]"),
                 id="a wildcard tool deny beats a wildcard tool allow"),
    pytest.param(dict(allow_tools={"pg": ["query", "list_*"]}), "list_tables",
                 Decision(True, "agents.a.allow.tools.pg[1]"),
                 id="a prefix wildcard allow grants a matching tool"),
    pytest.param(dict(allow_tools={"pg": ["*_read"]}), "table_read",
                 Decision(True, "agents.a.allow.tools.pg[0]"),
                 id="a suffix wildcard allow grants a matching tool"),
    pytest.param(dict(allow_tools={"pg": ["query"]}), "drop_table",
                 Decision(False, DEFAULT_DENY),
                 id="a tool missing from the server's allow list is denied by default"),
    pytest.param(dict(allow_tools={"*": ["query"]}), "drop_table",
                 Decision(False, DEFAULT_DENY),
                 id="an allow list under '*' alone restricts every server"),
    pytest.param(dict(allow_tools={"pg": []}), "query", Decision(False, DEFAULT_DENY),
                 id="an empty allow list for the server allows no tool"),
    pytest.param(dict(), "anything", Decision(True, "agents.a.allow.servers[0]"),
                 id="without a tool allow list an allowed server allows its tools"),
    pytest.param(dict(deny_tools={"pg": ["drop_*"]}), "drop_table",
                 Decision(False, "agents.a.deny.tools.pg[0]"),
                 id="without a tool allow list a tool deny still denies"),
    pytest.param(dict(deny_tools={"pg": ["drop_*"]}), "query",
                 Decision(True, "agents.a.allow.servers[0]"),
                 id="without a tool allow list an undenied tool is allowed by the server rule"),
    pytest.param(dict(allow_tools={"other": ["x"]}), "query",
                 Decision(True, "agents.a.allow.servers[0]"),
                 id="an allow list for another server does not restrict this one"),
    pytest.param(dict(deny_tools={"other": ["*"]}), "query",
                 Decision(True, "agents.a.allow.servers[0]"),
                 id="a deny list for another server does not apply to this one"),
    pytest.param(dict(allow_tools={"pg": ["query"], "*": ["query"]}), "query",
                 Decision(True, "agents.a.allow.tools.pg[0]"),
                 id="the server's own key is named before the '*' key"),
    pytest.param(dict(allow_tools={"pg": ["Query"]}), "query", Decision(False, DEFAULT_DENY),
                 id="tool names are case-sensitive"),
]


@pytest.mark.parametrize("tool_rules, tool, expected", TOOL_CASES)
def test_tool_precedence(tool_rules, tool, expected):
    rules = rules_with({"a": agent(allow_servers=["pg"], **tool_rules)})
    assert policy.decide_tool(rules, "a", "pg", tool) == expected


@pytest.mark.parametrize(
    "agent_rules, expected",
    [
        pytest.param(dict(allow_tools={"pg": ["*"]}), Decision(False, DEFAULT_DENY),
                     id="tool rules do not open a server that is not allowed"),
        pytest.param(dict(allow_servers=["*"], deny_servers=["pg"], allow_tools={"*": ["*"]}),
                     Decision(False, "agents.a.deny.servers[0]"),
                     id="a denied server denies its tools with the server rule"),
    ],
)
def test_server_decision_comes_first(agent_rules, expected):
    rules = rules_with({"a": agent(**agent_rules)})
    assert policy.decide_tool(rules, "a", "pg", "query") == expected


def test_admin_style_rules_allow_every_tool_on_every_server():
    rules = rules_with({"admin": agent(allow_servers=["*"], allow_tools={"*": ["*"]})})
    assert policy.decide_tool(rules, "admin", "x", "y") == Decision(
        True, "agents.admin.allow.tools.*[0]"
    )


# ============================================================================ patterns


@pytest.mark.parametrize(
    "pattern, name, expected",
    [
        ("*", "anything", True),
        ("*", "", True),
        ("get_*", "get_user", True),
        ("get_*", "get_", True),
        ("get_*", "Get_user", False),
        ("get_*", "forget_user", False),
        ("*_user", "get_user", True),
        ("*_user", "get_users", False),
        ("*.py", "a.py", True),
        ("*.py", "apy", False),  # '.' is literal, not "any character"
        (".*", "abc", False),
        ("a?c", "abc", False),  # '?' is literal
        ("a?c", "a?c", True),
        ("[ab]", "a", False),  # brackets are literal
        ("[ab]", "[ab]", True),
        ("a/b", "a/b", True),
        ("a/*", "a/b/c", True),
        ("..", "..", True),
        ("..", "ab", False),
        ("../*", "../etc", True),
        ("read file", "read file", True),
        ("read file", "read_file", False),
        ("query", "Query", False),
        ("query", "query ", False),
        ("query", "quer", False),
    ],
)
def test_matches(pattern, name, expected):
    assert policy.matches(pattern, name) is expected


@pytest.mark.parametrize("pattern", ["*", "a*", "*a", "a", "a?b", "a b", "[x]", "..", "a.b-c_d"])
def test_valid_patterns(pattern):
    assert policy.is_valid_pattern(pattern)


@pytest.mark.parametrize("pattern", ["", "**", "a*b", "*a*", "***", "a**", "**a", "a*b*"])
def test_invalid_patterns(pattern):
    assert not policy.is_valid_pattern(pattern)


# ============================================================================ identity

AGENTS = {"default": agent(), "backend": agent(), "admin": agent(), "team.role-1_x": agent()}


def resolve(requested, *, default_agent=None, pinned=None, agents=AGENTS, deny_missing=False):
    return policy.resolve_agent(
        rules_with(dict(agents), deny_missing), requested,
        default_agent=default_agent, pinned=pinned,
    )


def test_a_requested_agent_in_the_rules_is_used():
    assert resolve("backend", default_agent="admin") == "backend"


def test_hierarchical_agent_ids_are_accepted():
    assert resolve("team.role-1_x") == "team.role-1_x"


def test_pinned_agent_is_used_when_agent_id_is_omitted():
    assert resolve(None, pinned="backend", default_agent="admin") == "backend"


def test_pinned_agent_is_used_when_agent_id_repeats_it():
    assert resolve("backend", pinned="backend") == "backend"


def test_pinned_agent_wins_over_deny_on_missing_agent():
    assert resolve(None, pinned="backend", deny_missing=True) == "backend"


def test_a_different_agent_id_is_refused_by_a_pinned_gateway():
    with pytest.raises(errors.InvalidAgentId) as caught:
        resolve("admin", pinned="backend")
    assert caught.value.code == errors.INVALID_AGENT_ID


def test_a_pinned_agent_missing_from_the_rules_is_refused():
    with pytest.raises(errors.InvalidAgentId) as caught:
        resolve(None, pinned="ghost")
    assert caught.value.code == errors.INVALID_AGENT_ID
    assert "'ghost'" in caught.value.message


def test_an_unknown_agent_id_is_refused_not_given_a_default():
    with pytest.raises(errors.InvalidAgentId) as caught:
        resolve("intruder", default_agent="admin")
    assert caught.value.code == errors.INVALID_AGENT_ID


@pytest.mark.parametrize(
    "requested",
    [
        pytest.param("\u0430dmin", id="Cyrillic a in admin"),
        pytest.param("\uff41dmin", id="fullwidth a in admin"),
        pytest.param("admin\n", id="trailing newline"),
        pytest.param("Admin", id="different case"),
        pytest.param("ADMIN", id="upper case"),
        pytest.param(" admin", id="leading space"),
        pytest.param("admin\x00", id="trailing NUL"),
        pytest.param("", id="empty string"),
        pytest.param("a b", id="inner space"),
        pytest.param("admin/..", id="path characters"),
        pytest.param(7, id="not a string"),
    ],
)
def test_look_alike_and_malformed_agent_ids_are_refused(requested):
    with pytest.raises(errors.InvalidAgentId) as caught:
        resolve(requested, default_agent="admin")
    assert caught.value.code == errors.INVALID_AGENT_ID


def test_a_malformed_agent_id_message_says_what_is_allowed():
    with pytest.raises(errors.InvalidAgentId) as caught:
        resolve("a b")
    assert caught.value.message == (
        "agent_id 'a b' is not valid: use only letters, digits, '_', '.', '-'"
    )


def test_a_very_long_agent_id_is_shortened_in_the_message():
    with pytest.raises(errors.InvalidAgentId) as caught:
        resolve("x" * 10_000)
    assert len(caught.value.message) < 200


def test_omitted_agent_id_is_refused_when_the_rules_require_it():
    with pytest.raises(errors.InvalidAgentId) as caught:
        resolve(None, default_agent="admin", deny_missing=True)
    assert caught.value.code == errors.INVALID_AGENT_ID
    assert caught.value.message.startswith("agent_id is required")


def test_omitted_agent_id_uses_the_configured_default_agent_first():
    assert resolve(None, default_agent="admin") == "admin"


def test_a_configured_default_agent_missing_from_the_rules_is_an_error():
    with pytest.raises(errors.FallbackAgentNotInRules) as caught:
        resolve(None, default_agent="ghost")
    assert caught.value.code == errors.FALLBACK_AGENT_NOT_IN_RULES
    assert "'ghost'" in caught.value.message


def test_omitted_agent_id_falls_back_to_the_agent_named_default():
    assert resolve(None) == "default"


def test_omitted_agent_id_without_any_fallback_is_an_error():
    with pytest.raises(errors.NoFallbackConfigured) as caught:
        resolve(None, agents={"backend": agent()})
    assert caught.value.code == errors.NO_FALLBACK_CONFIGURED
    assert "GATEWAY_DEFAULT_AGENT" in caught.value.message


@pytest.mark.parametrize(
    "agent_id, valid",
    [("backend", True), ("a.b-c_D9", True), ("a b", False), ("a\n", False),
     ("\u0430", False), ("", False), ("a:b", False)],
)
def test_agent_id_pattern(agent_id, valid):
    assert policy.is_valid_agent_id(agent_id) is valid


# ============================================================================ client requests


@pytest.mark.parametrize(
    "allow, deny, kind, expected",
    [
        (None, (), "sampling", Decision(True, "agents.a.allow.client_requests (not set: all allowed)")),
        (("roots",), (), "roots", Decision(True, "agents.a.allow.client_requests[0]")),
        (("roots",), (), "sampling", Decision(False, "agents.a.allow.client_requests")),
        (None, ("elicitation",), "elicitation", Decision(False, "agents.a.deny.client_requests[0]")),
        (("elicitation",), ("elicitation",), "elicitation", Decision(False, "agents.a.deny.client_requests[0]")),
        ((), (), "roots", Decision(False, "agents.a.allow.client_requests")),
    ],
    ids=["unset allows all", "listed", "not listed", "denied", "deny beats allow", "empty allows none"],
)
def test_client_request_kinds_follow_the_agents_allow_and_deny_lists(allow, deny, kind, expected):
    rules = rules_with({"a": dataclasses.replace(agent(), allow_client_requests=allow, deny_client_requests=deny)})
    assert policy.decide_client_request(rules, "a", kind) == expected


def test_client_requests_of_an_unknown_agent_are_denied():
    assert policy.decide_client_request(rules_with({}), "ghost", "roots") == Decision(False, DEFAULT_DENY)
