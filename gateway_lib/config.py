"""Load and validate the two config files.

Over 400 lines for one job: both files take the same four steps, held here once, and their
semantic checks are short functions that read best beside the step that calls them.

A file goes through four steps, and every problem found on the way is kept, so one run of
`check` (or one failed reload) lists all of them with a line number:

    read (UTF-8, BOM tolerated) -> parse JSON (duplicate keys refused)      jsonfile
        -> JSON Schema (schemas/*.schema.json)                               schema_check
        -> semantic checks, ${VAR} substitution (substitution)              here
        -> frozen model objects

The result is immutable (tuples and MappingProxyType); store.ConfigStore swaps whole
snapshots. Messages never contain env or header values: those are where secrets live.
"""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from urllib.parse import urlsplit
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from . import claude_code_keys, model, policy
from .errors import ConfigError, Problem
from .jsonfile import Document, JsonPath, quote, read_document
from .model import AgentRules, RateLimit, RulesConfig, ServerSpec, ServersConfig
from .schema_check import MCP_CONFIG_SCHEMA, RULES_SCHEMA, did_you_mean, schema_problems, schema_validator
from .store import undefined_server_warnings
from .sendable import has_lone_surrogate
from .substitution import Substituter, unusable_message

logger = logging.getLogger(__name__)

# Both spellings of the transport key, and the synonyms they may use.
TRANSPORT_KEYS = ("type", "transport")
TRANSPORT_SYNONYMS = {"streamable-http": model.HTTP}

# Put in every stdio server's environment: the .mcp.json files of the gateways above it, so
# a gateway started (however indirectly) by a gateway that reads the same file knows it.
PARENT_CONFIGS_ENV = "AGENT_MCP_GATEWAY_PARENT_CONFIGS"
# The ways an entry can start this very gateway.
GATEWAY_SCRIPT = Path(__file__).resolve().parent.parent / "gateway.py"
CONSOLE_SCRIPT = "agent-mcp-gateway"
PACKAGE = "gateway_lib"


def _finish(problems: Iterable[Problem]) -> None:
    """Raise ConfigError with every distinct problem, if there is any."""
    unique = list(dict.fromkeys(problems))
    if unique:
        raise ConfigError(unique)


# ============================================================================ servers


def _read_valid(path: str, schema: str, semantic_problems: Callable[[Document], list[Problem]]) -> Document:
    """Read the file and check it against its schema and semantically; raise ConfigError
    with every problem, or return the parsed document."""
    document, problems = read_document(path)
    semantic = semantic_problems(document)
    explained = {problem.path: problem for problem in semantic}
    problems += schema_problems(document, schema, explained)
    problems += semantic
    _finish(problems)
    return document


def load_servers(path: str, environ: Mapping[str, str]) -> ServersConfig:
    document = _read_valid(path, MCP_CONFIG_SCHEMA, _server_semantic_problems)
    # The folder of the file itself: a symlinked .mcp.json keeps the meaning of its relative
    # cwd wherever the link lives.
    config_dir = Path(os.path.realpath(path)).parent
    entries = document.data["mcpServers"]
    warnings = _unknown_key_warnings(document)
    warnings += [warning for name, entry in _server_entries(document)
                 for warning in claude_code_keys.entry_warnings(document, ("mcpServers", name), entry)]
    own = os.path.realpath(path)
    parents = [p for p in environ.get(PARENT_CONFIGS_ENV, "").split(os.pathsep) if p]
    if own in parents:
        warnings.append(f"{path}: this gateway was started by a gateway that reads the same file, so it "
                        f"would start itself again: none of its {len(entries)} server(s) is loaded")
        entries = {}
    marker = os.pathsep.join([*parents, own])
    servers = {}
    for name, entry in entries.items():
        if _starts_this_gateway(entry, config_dir):
            warnings.append(f"Server {name!r} is skipped: its entry starts this gateway, which would then call itself")
            continue
        spec = _build_server(name, entry, environ, config_dir, marker)
        if spec.unusable:
            warnings.append(spec.unusable)
        servers[name] = spec
    logger.debug("loaded %d server(s) from %s", len(servers), path)
    return ServersConfig(path=str(path), servers=MappingProxyType(servers), warnings=tuple(warnings))


def _starts_this_gateway(entry: Mapping[str, Any], config_dir: Path) -> bool:
    """Whether the entry runs gateway.py, the console script, or `-m gateway_lib`."""
    words = [entry["command"], *entry.get("args", ())] if "command" in entry else []
    if words and Path(words[0]).name == CONSOLE_SCRIPT:
        return True
    folder = config_dir / entry.get("cwd", ".")
    for index, word in enumerate(words):
        if word == "-m" and index + 1 < len(words) and words[index + 1].split(".")[0] == PACKAGE:
            return True
        if Path(word).name == GATEWAY_SCRIPT.name and Path(os.path.realpath(folder / word)) == GATEWAY_SCRIPT:
            return True
    return False


def _unknown_key_warnings(document: Document) -> list[str]:
    """Keys of a server entry that the gateway does not know: ignored, but maybe a typo."""
    known = sorted(schema_validator(MCP_CONFIG_SCHEMA).schema["$defs"]["server"]["properties"])
    warnings = []
    for name, entry in _server_entries(document):
        for key in entry:
            if key in known:
                continue
            message = f"unknown key {quote(key)} is ignored" + did_you_mean(key, known)
            warnings.append(str(document.problem(("mcpServers", name, key), message)))
    return warnings


def _server_entries(document: Document) -> Iterable[tuple[str, dict[str, Any]]]:
    """Entries that are objects; the schema reports everything else."""
    data = document.data
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        return []
    return [(name, entry) for name, entry in servers.items() if isinstance(entry, dict)]


def _server_semantic_problems(document: Document) -> list[Problem]:
    problems = _surrogate_problems(document)
    for name, entry in _server_entries(document):
        path: JsonPath = ("mcpServers", name)
        message = _endpoint_problem(entry) or _transport_problem(entry)
        if message:
            problems.append(document.problem(path, message))
        url_message = _url_problem(entry.get("url"))
        if url_message:
            problems.append(document.problem(path + ("url",), url_message))
        problems += claude_code_keys.entry_problems(document, path, entry)
    return problems


def _surrogate_problems(document: Document) -> list[Problem]:
    """Every key and string holding a lone surrogate (valid JSON, but no process or server
    can be given it as UTF-8)."""
    problems, stack = [], [((), document.data)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if has_lone_surrogate(key):
                    problems.append(document.problem(path + (key,), _SURROGATE_MESSAGE.format(what="key")))
                stack.append((path + (key,), value))
        elif isinstance(node, list):
            stack.extend((path + (index,), value) for index, value in enumerate(node))
        elif isinstance(node, str) and has_lone_surrogate(node):
            problems.append(document.problem(path, _SURROGATE_MESSAGE.format(what="value")))
    return problems


_SURROGATE_MESSAGE = ("the {what} holds a lone surrogate (an escape in \\ud800-\\udfff without its pair), "
                      "which is not text: remove it")


def _url_problem(url: Any) -> str | None:
    if not isinstance(url, str) or url.startswith("${"):
        return None  # the schema reports a non-string; a ${VAR} is known only once substituted
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return None
    # The URL itself is not quoted: it may carry a token.
    return "must be an http:// or https:// URL with a host, such as 'https://mcp.example.com/mcp'"


def _endpoint_problem(entry: Mapping[str, Any]) -> str | None:
    has_command, has_url = "command" in entry, "url" in entry
    if has_command and has_url:
        return ("has both 'command' and 'url': keep 'command' for a local (stdio) server "
                "or 'url' for a remote (http/sse) server")
    if not has_command and not has_url:
        return "needs 'command' for a local (stdio) server or 'url' for a remote (http/sse) server"
    return None


def _normal_transport(value: Any) -> Any:
    return TRANSPORT_SYNONYMS.get(value, value) if isinstance(value, str) else value


def _transport_problem(entry: Mapping[str, Any]) -> str | None:
    given = [_normal_transport(entry[key]) for key in TRANSPORT_KEYS if key in entry]
    if len(given) == 2 and given[0] != given[1]:
        return (f"'type' is {quote(entry['type'])} but 'transport' is "
                f"{quote(entry['transport'])}: keep one of them, or make them agree")
    transport = _resolve_transport(entry)
    if transport == model.STDIO and "command" not in entry:
        return "transport 'stdio' needs 'command' (the program to launch), not 'url'"
    if transport in (model.HTTP, model.SSE) and "url" not in entry:
        return f"transport {transport!r} needs 'url' (the server's endpoint), not 'command'"
    return None


def _resolve_transport(entry: Mapping[str, Any]) -> Any:
    for key in TRANSPORT_KEYS:
        if key in entry:
            return _normal_transport(entry[key])
    return model.HTTP if "url" in entry else model.STDIO


def _build_server(
    name: str, entry: Mapping[str, Any], environ: Mapping[str, str], config_dir: Path, marker: str
) -> ServerSpec:
    substitute = Substituter(environ)
    command = entry.get("command")
    url = entry.get("url")
    transport = _resolve_transport(entry)
    substituted_command = substitute(command) if command is not None else None  # in the order of the entry,
    args = tuple(substitute(arg) for arg in entry.get("args", ()))  # so missing variables are named in order
    env = {key: substitute(value) for key, value in entry.get("env", {}).items()}
    if transport == model.STDIO:
        env[PARENT_CONFIGS_ENV] = marker  # the child passes it on to anything it starts
    return ServerSpec(
        name=name,
        transport=transport,
        description=entry.get("description", ""),
        command=substituted_command,
        args=args,
        env=MappingProxyType(env),
        cwd=_resolve_cwd(entry.get("cwd"), config_dir),
        url=substitute(url) if url is not None else None,
        headers=_substituted_map(entry.get("headers", {}), substitute),
        timeout_ms=claude_code_keys.timeout_ms(entry),
        max_concurrency=entry.get("max_concurrency"),
        session=entry.get("session", model.PER_CALL),
        idle_timeout_ms=entry.get("idle_timeout_ms", model.DEFAULT_IDLE_TIMEOUT_MS),
        spare=entry.get("spare", True),
        max_result_tokens=entry.get("max_result_tokens"),
        oauth=claude_code_keys.build_oauth(entry, substitute, config_dir),
        headers_helper=entry.get("headersHelper"),
        unusable=unusable_message(name, substitute.missing),
        written_command=command,
        written_url=url,
    )


def _substituted_map(values: Mapping[str, str], substitute: Substituter) -> Mapping[str, str]:
    return MappingProxyType({key: substitute(value) for key, value in values.items()})


def _resolve_cwd(cwd: str | None, config_dir: Path) -> str | None:
    # A relative cwd means "relative to the .mcp.json that says so", not to wherever the
    # gateway happened to be started; an absolute one is kept as written.
    if cwd is None:
        return None
    return os.path.normpath(config_dir / cwd)


# ============================================================================ rules


def load_rules(path: str) -> RulesConfig:
    document = _read_valid(path, RULES_SCHEMA, _rules_semantic_problems)
    data = document.data
    agents = {agent_id: _build_agent(body) for agent_id, body in data["agents"].items()}
    defaults = data.get("defaults", {})
    logger.debug("loaded rules for %d agent(s) from %s", len(agents), path)
    return RulesConfig(
        path=str(path),
        agents=MappingProxyType(agents),
        deny_on_missing_agent=defaults.get("deny_on_missing_agent", False),
        on_tool_change=defaults.get("on_tool_change", "block"),
    )


def _build_agent(body: Mapping[str, Any]) -> AgentRules:
    allow, deny = body.get("allow", {}), body.get("deny", {})
    return AgentRules(
        allow_servers=tuple(allow.get("servers", ())),
        deny_servers=tuple(deny.get("servers", ())),
        allow_tools=_frozen_tools(allow.get("tools", {})),
        deny_tools=_frozen_tools(deny.get("tools", {})),
        token_sha256=tuple(body.get("token_sha256", ())),
        rate_limit=_rate_limit(body.get("rate_limit")),
        allow_client_requests=tuple(allow["client_requests"]) if "client_requests" in allow else None,
        deny_client_requests=tuple(deny.get("client_requests", ())),
    )


def _rate_limit(body: Mapping[str, Any] | None) -> RateLimit | None:
    if body is None:
        return None
    per_minute = body["calls_per_minute"]
    return RateLimit(calls_per_minute=per_minute, burst=body.get("burst", max(1, math.ceil(per_minute))))


def _frozen_tools(tools: Mapping[str, list[str]]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({server: tuple(patterns) for server, patterns in tools.items()})


def agent_id_message(agent_id: str) -> str:
    return f"agent id {quote(agent_id)} may contain only letters, digits, '_', '.', '-'"


def tools_key_message(key: str) -> str:
    return f"tools key {quote(key)} is not allowed: use a server name, or '*' for every server"


def _rules_semantic_problems(document: Document) -> list[Problem]:
    """Friendly versions of the schema's pattern checks, and a second line of defence."""
    problems = _surrogate_problems(document)
    data = document.data
    agents = data.get("agents") if isinstance(data, dict) else None
    if not isinstance(agents, dict):
        return problems
    for agent_id, body in agents.items():
        if not policy.is_valid_agent_id(agent_id):
            problems.append(document.problem(("agents", agent_id), agent_id_message(agent_id)))
        if isinstance(body, dict):
            problems += _rule_set_problems(document, ("agents", agent_id), body)
    return problems + _shared_token_problems(document, agents)


TOKEN_HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
TOKEN_HASH_MESSAGE = ("is not a SHA-256 in hex (64 lowercase hex digits): list the token's hash, never the "
                      "token itself ('gateway.py token AGENT' prints both)")


def _shared_token_problems(document: Document, agents: dict) -> list[Problem]:
    """A token must name one agent: a hash listed under two agents would make identity a guess."""
    owner: dict[str, str] = {}
    problems = []
    for agent_id, body in agents.items():
        hashes = body.get("token_sha256") if isinstance(body, dict) else None
        for index, digest in enumerate(hashes if isinstance(hashes, list) else ()):
            if not isinstance(digest, str):
                continue
            if not TOKEN_HASH_PATTERN.fullmatch(digest):
                # Said without the value: what was pasted here may be the token itself.
                problems.append(document.problem(("agents", agent_id, "token_sha256", index), TOKEN_HASH_MESSAGE))
                continue
            first = owner.setdefault(digest, agent_id)
            if first != agent_id:
                # The message names the agents, never the hash.
                problems.append(document.problem(
                    ("agents", agent_id, "token_sha256", index),
                    f"this token hash is also listed under agent {quote(first)}: a token must belong to one agent"))
    return problems


def _rule_set_problems(document: Document, agent_path: JsonPath, body: dict) -> list[Problem]:
    problems = []
    for kind in ("allow", "deny"):
        rule_set = body.get(kind)
        if not isinstance(rule_set, dict):
            continue
        base = agent_path + (kind,)
        problems += _pattern_list_problems(document, base + ("servers",), rule_set.get("servers"))
        tools = rule_set.get("tools")
        if not isinstance(tools, dict):
            continue
        for key, patterns in tools.items():
            key_path = base + ("tools", key)
            if key != policy.ALL_SERVERS_KEY and (not key or policy.WILDCARD in key):
                problems.append(document.problem(key_path, tools_key_message(key)))
            problems += _pattern_list_problems(document, key_path, patterns)
    return problems


def _pattern_list_problems(document: Document, path: JsonPath, patterns: Any) -> list[Problem]:
    if not isinstance(patterns, list):
        return []
    return [
        document.problem(path + (index,), policy.pattern_message(pattern))
        for index, pattern in enumerate(patterns)
        if isinstance(pattern, str) and not policy.is_valid_pattern(pattern)
    ]


# ============================================================================ check


def check_files(
    mcp_path: str | os.PathLike[str],
    rules_path: str | os.PathLike[str],
    environ: Mapping[str, str],
) -> tuple[list[Problem], list[str]]:
    """Every problem in both files, plus warnings (undefined servers, unusable servers)."""
    problems: list[Problem] = []
    servers = rules = None
    try:
        servers = load_servers(str(mcp_path), environ)
    except ConfigError as exc:
        problems += exc.problems
    try:
        rules = load_rules(str(rules_path))
    except ConfigError as exc:
        problems += exc.problems
    warnings: list[str] = []
    if servers is not None:
        warnings += servers.warnings
    if servers is not None and rules is not None:
        warnings += undefined_server_warnings(servers, rules)
    return problems, warnings
