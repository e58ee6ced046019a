"""Load, validate and hold the two config files.

A file goes through four steps, and every problem found on the way is kept, so one run of
`check` (or one failed reload) lists all of them with a line number:

    read (UTF-8, BOM tolerated) -> parse JSON (duplicate keys refused)
        -> JSON Schema (schemas/*.schema.json) -> semantic checks -> frozen model objects

The result is immutable (tuples and MappingProxyType); ConfigStore swaps whole snapshots.
Messages never contain env or header values: those are where secrets live.
"""

from __future__ import annotations

import bisect
import difflib
import functools
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from . import model, policy
from .errors import ConfigError, Problem
from .model import AgentRules, RulesConfig, ServerSpec, ServersConfig, Snapshot

logger = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
MCP_CONFIG_SCHEMA = "mcp-config.schema.json"
RULES_SCHEMA = "gateway-rules.schema.json"

MCP_CONFIG_NAME = ".mcp.json"
RULES_NAME = ".mcp-gateway-rules.json"
USER_CONFIG_DIR = Path(".config") / "agent-mcp-gateway"
MCP_CONFIG_ENV = "GATEWAY_MCP_CONFIG"
RULES_ENV = "GATEWAY_RULES"

# Both spellings of the transport key, and the synonyms they may use.
TRANSPORT_KEYS = ("type", "transport")
TRANSPORT_SYNONYMS = {"streamable-http": model.HTTP}

_MAX_QUOTED = 80

JsonPath = tuple[str | int, ...]


# ============================================================================ JSON paths


_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_json_path(path: Iterable[str | int]) -> str:
    """('mcpServers', 'db', 'args', 0) -> "$.mcpServers.db.args[0]"; odd keys get brackets."""
    parts = ["$"]
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif _SIMPLE_KEY.fullmatch(part):
            parts.append(f".{part}")
        else:
            parts.append(f"[{part!r}]")  # repr escapes quotes and control characters
    return "".join(parts)


class _JsonLocator:
    """Records the line of every value (and every duplicate key) in a JSON text.

    Runs only on text that json.loads has already accepted, so it can skip validation;
    the json module itself reports no positions for values, hence this small walker.
    """

    def __init__(self, text: str):
        self._text = text
        self._pos = 0
        self._newlines = [index for index, char in enumerate(text) if char == "\n"]
        self.lines: dict[JsonPath, int] = {}
        self.duplicates: list[tuple[JsonPath, int]] = []

    def run(self) -> "_JsonLocator":
        self._value(())
        return self

    def _line(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1

    def _skip_whitespace(self) -> None:
        while self._pos < len(self._text) and self._text[self._pos] in " \t\r\n":
            self._pos += 1

    def _next_char(self) -> str:
        self._skip_whitespace()
        char = self._text[self._pos]
        self._pos += 1
        return char

    def _value(self, path: JsonPath) -> None:
        self._skip_whitespace()
        self.lines[path] = self._line(self._pos)  # later duplicates win, as in json.loads
        char = self._text[self._pos]
        if char == "{":
            self._object(path)
        elif char == "[":
            self._array(path)
        elif char == '"':
            self._string()
        else:
            self._scalar()

    def _object(self, path: JsonPath) -> None:
        self._pos += 1
        self._skip_whitespace()
        if self._text[self._pos] == "}":
            self._pos += 1
            return
        seen: set[str] = set()
        while True:
            self._skip_whitespace()
            key_line = self._line(self._pos)
            key = self._string()
            if key in seen:
                self.duplicates.append((path + (key,), key_line))
            seen.add(key)
            self._next_char()  # ':'
            self._value(path + (key,))
            if self._next_char() == "}":
                return

    def _array(self, path: JsonPath) -> None:
        self._pos += 1
        self._skip_whitespace()
        if self._text[self._pos] == "]":
            self._pos += 1
            return
        index = 0
        while True:
            self._value(path + (index,))
            index += 1
            if self._next_char() == "]":
                return

    def _string(self) -> str:
        start = self._pos
        self._pos += 1
        while self._text[self._pos] != '"':
            self._pos += 2 if self._text[self._pos] == "\\" else 1
        self._pos += 1
        return json.loads(self._text[start : self._pos])

    def _scalar(self) -> None:
        while self._pos < len(self._text) and self._text[self._pos] not in ",]} \t\r\n":
            self._pos += 1


# ============================================================================ reading


@dataclass
class _Document:
    """One parsed file plus what is needed to point at a place in it."""

    file: str
    data: Any
    lines: dict[JsonPath, int] = field(default_factory=dict)

    def line_of(self, path: JsonPath) -> int | None:
        """Line of the value at `path`, or of its nearest ancestor that exists."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def problem(self, path: JsonPath, message: str) -> Problem:
        return Problem(self.file, format_json_path(path), message, self.line_of(path))


def _read_document(path: str | os.PathLike[str]) -> tuple[_Document, list[Problem]]:
    """Read and parse; raises ConfigError when there is nothing to validate."""
    file = str(path)
    text = _read_text(file)
    if not text.strip():
        raise ConfigError([Problem(file, "$", "file is empty: it must contain a JSON object")])
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        message = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        raise ConfigError([Problem(file, "$", message, exc.lineno)]) from None
    except RecursionError:
        raise ConfigError([Problem(file, "$", "JSON is nested too deeply")]) from None
    try:
        locator = _JsonLocator(text).run()
    except RecursionError:
        raise ConfigError([Problem(file, "$", "JSON is nested too deeply")]) from None
    document = _Document(file, data, locator.lines)
    duplicates = [
        Problem(file, format_json_path(key_path), _duplicate_message(key_path), line)
        for key_path, line in locator.duplicates
    ]
    return document, duplicates


def _duplicate_message(key_path: JsonPath) -> str:
    return (
        f"key {_quote(key_path[-1])} appears more than once in the same object: "
        "keep only one (otherwise the last one would silently win)"
    )


def _read_text(file: str) -> str:
    try:
        raw = Path(file).read_bytes()
    except FileNotFoundError:
        raise ConfigError([Problem(file, "$", "file not found")]) from None
    except OSError as exc:
        raise ConfigError([Problem(file, "$", f"cannot read file: {exc.strerror}")]) from None
    try:
        return raw.decode("utf-8-sig")  # tolerates the BOM some Windows editors write
    except UnicodeDecodeError as exc:
        message = f"file is not valid UTF-8 (bad byte at offset {exc.start}): save it as UTF-8"
        raise ConfigError([Problem(file, "$", message)]) from None


# ============================================================================ schema errors


@functools.lru_cache(maxsize=None)
def schema_validator(name: str) -> Draft202012Validator:
    """The validator for one schema file in SCHEMA_DIR (read once)."""
    schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


_TYPE_WORDS = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}

# Validators whose errors the semantic checks explain better, when they found the problem.
_EXPLAINED_BY_SEMANTICS = {"pattern", "oneOf"}

_MISSING_KEY_HINTS = {
    "mcpServers": 'add "mcpServers": { "<name>": { "command": ... } }',
    "agents": 'add "agents": { "<agent id>": { "allow": { "servers": [...] } } }',
}


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


_PYTHON_TYPE_WORDS = ((dict, "an object"), (list, "an array"), (str, "a string"),
                      (int, "a whole number"), (float, "a number"))


def _json_type(value: object) -> str:
    if isinstance(value, bool):  # before int: bool is a subclass of int
        return "true or false"
    for python_type, word in _PYTHON_TYPE_WORDS:
        if isinstance(value, python_type):
            return word
    return "null"


def _schema_problems(
    document: _Document, schema_name: str, explained: Mapping[str, Problem]
) -> list[Problem]:
    problems: list[Problem] = []
    for error in schema_validator(schema_name).iter_errors(document.data):
        problems.extend(_translate(document, error, explained))
    return problems


def _translate(
    document: _Document, error: ValidationError, explained: Mapping[str, Problem]
) -> list[Problem]:
    """Turn one jsonschema error into problems that say how to fix it (no secret values)."""
    path: JsonPath = tuple(error.absolute_path)
    if "propertyNames" in error.schema_path:
        path = path + (error.instance,)  # the error is about the key, not the object
    if error.validator in _EXPLAINED_BY_SEMANTICS and format_json_path(path) in explained:
        return []
    if error.validator == "additionalProperties":
        return _unknown_key_problems(document, path, error)
    if error.validator == "required":
        return _missing_key_problems(document, path, error)
    return [document.problem(path, _message_for(error))]


def _message_for(error: ValidationError) -> str:
    validator, expected, value = error.validator, error.validator_value, error.instance
    if validator == "type":
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in _as_list(expected))
        return f"must be {wanted}, not {_json_type(value)}"
    if validator == "enum":
        choices = ", ".join(_quote(choice) for choice in expected)
        return f"{_quote(value)} is not allowed here: use one of {choices}"
    if validator == "minimum":
        return f"must be at least {expected}, not {value}"
    if validator == "minLength":
        return "must not be empty"
    if validator == "pattern":
        return f"{_quote(value)} does not have the required form (regular expression {expected})"
    if validator == "oneOf":
        return "must match exactly one allowed shape"
    return f"breaks the schema rule {validator!r}"


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _unknown_key_problems(
    document: _Document, path: JsonPath, error: ValidationError
) -> list[Problem]:
    known = sorted(error.schema.get("properties", {}))
    problems = []
    for key in error.instance:
        if key in known:
            continue
        message = f"unknown key {_quote(key)}: allowed keys here are {', '.join(map(repr, known))}"
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        problems.append(document.problem(path + (key,), message))
    return problems


def _missing_key_problems(
    document: _Document, path: JsonPath, error: ValidationError
) -> list[Problem]:
    problems = []
    for key in error.validator_value:
        if key not in error.instance:
            hint = _MISSING_KEY_HINTS.get(key, "add it")
            message = f"missing required key {key!r}: {hint}"
            problems.append(Problem(document.file, format_json_path(path + (key,)), message,
                                    document.line_of(path)))
    return problems


def _finish(problems: Iterable[Problem]) -> None:
    """Raise ConfigError with every distinct problem, if there is any."""
    unique = list(dict.fromkeys(problems))
    if unique:
        raise ConfigError(unique)


# ============================================================================ servers


# ${VAR} or ${VAR:-default}. As in the shell, the default is used when VAR is unset or empty.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_servers(path: str, environ: Mapping[str, str]) -> ServersConfig:
    document, problems = _read_document(path)
    semantic = _server_semantic_problems(document)
    explained = {problem.path: problem for problem in semantic}
    problems += _schema_problems(document, MCP_CONFIG_SCHEMA, explained)
    problems += semantic
    _finish(problems)
    config_dir = Path(os.path.abspath(path)).parent
    servers = {
        name: _build_server(name, entry, environ, config_dir)
        for name, entry in document.data["mcpServers"].items()
    }
    logger.debug("loaded %d server(s) from %s", len(servers), path)
    return ServersConfig(path=str(path), servers=MappingProxyType(servers))


def _server_entries(document: _Document) -> Iterable[tuple[str, dict[str, Any]]]:
    """Entries that are objects; the schema reports everything else."""
    data = document.data
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        return []
    return [(name, entry) for name, entry in servers.items() if isinstance(entry, dict)]


def _server_semantic_problems(document: _Document) -> list[Problem]:
    problems = []
    for name, entry in _server_entries(document):
        path: JsonPath = ("mcpServers", name)
        message = _endpoint_problem(entry) or _transport_problem(entry)
        if message:
            problems.append(document.problem(path, message))
    return problems


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
        return (f"'type' is {_quote(entry['type'])} but 'transport' is "
                f"{_quote(entry['transport'])}: keep one of them, or make them agree")
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


class _Substituter:
    """Replaces ${VAR} references from one environment, remembering unset variables."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        self.missing: list[str] = []

    def __call__(self, text: str) -> str:
        return _VARIABLE.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = self._environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            if name not in self.missing:
                self.missing.append(name)
            return match.group(0)  # left as written; the server is marked unusable
        return value


def _build_server(
    name: str, entry: Mapping[str, Any], environ: Mapping[str, str], config_dir: Path
) -> ServerSpec:
    substitute = _Substituter(environ)
    command = entry.get("command")
    url = entry.get("url")
    spec = ServerSpec(
        name=name,
        transport=_resolve_transport(entry),
        description=entry.get("description", ""),
        command=substitute(command) if command is not None else None,
        args=tuple(substitute(arg) for arg in entry.get("args", ())),
        env=_substituted_map(entry.get("env", {}), substitute),
        cwd=_resolve_cwd(entry.get("cwd"), config_dir),
        url=substitute(url) if url is not None else None,
        headers=_substituted_map(entry.get("headers", {}), substitute),
        timeout_ms=entry.get("timeout_ms"),
        max_concurrency=entry.get("max_concurrency"),
        session=entry.get("session", model.PER_CALL),
        idle_timeout_ms=entry.get("idle_timeout_ms", model.DEFAULT_IDLE_TIMEOUT_MS),
        unusable=_unusable_message(name, substitute.missing),
        written_command=command,
        written_url=url,
    )
    if spec.unusable:
        logger.warning("%s", spec.unusable)
    return spec


def _substituted_map(values: Mapping[str, str], substitute: _Substituter) -> Mapping[str, str]:
    return MappingProxyType({key: substitute(value) for key, value in values.items()})


def _resolve_cwd(cwd: str | None, config_dir: Path) -> str | None:
    # A relative cwd means "relative to the .mcp.json that says so", not to wherever the
    # gateway happened to be started; an absolute one is kept as written.
    if cwd is None:
        return None
    return os.path.normpath(config_dir / cwd)


def _unusable_message(name: str, missing: list[str]) -> str | None:
    # Names the variables only; their values (if any) never appear in a message.
    if not missing:
        return None
    if len(missing) == 1:
        return f"Server {name!r} needs environment variable {missing[0]!r}, which is not set"
    listed = ", ".join(map(repr, missing[:-1])) + f" and {missing[-1]!r}"
    return f"Server {name!r} needs environment variables {listed}, which are not set"


# ============================================================================ rules


def load_rules(path: str) -> RulesConfig:
    document, problems = _read_document(path)
    semantic = _rules_semantic_problems(document)
    explained = {problem.path: problem for problem in semantic}
    problems += _schema_problems(document, RULES_SCHEMA, explained)
    problems += semantic
    _finish(problems)
    data = document.data
    agents = {agent_id: _build_agent(body) for agent_id, body in data["agents"].items()}
    defaults = data.get("defaults", {})
    logger.debug("loaded rules for %d agent(s) from %s", len(agents), path)
    return RulesConfig(
        path=str(path),
        agents=MappingProxyType(agents),
        deny_on_missing_agent=defaults.get("deny_on_missing_agent", False),
    )


def _build_agent(body: Mapping[str, Any]) -> AgentRules:
    allow, deny = body.get("allow", {}), body.get("deny", {})
    return AgentRules(
        allow_servers=tuple(allow.get("servers", ())),
        deny_servers=tuple(deny.get("servers", ())),
        allow_tools=_frozen_tools(allow.get("tools", {})),
        deny_tools=_frozen_tools(deny.get("tools", {})),
    )


def _frozen_tools(tools: Mapping[str, list[str]]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({server: tuple(patterns) for server, patterns in tools.items()})


def agent_id_message(agent_id: str) -> str:
    return f"agent id {_quote(agent_id)} may contain only letters, digits, '_', '.', '-'"


def pattern_message(pattern: str) -> str:
    return (f"pattern {_quote(pattern)} is not allowed: "
            "use '*', 'prefix*', '*suffix' or an exact name")


def tools_key_message(key: str) -> str:
    return f"tools key {_quote(key)} is not allowed: use a server name, or '*' for every server"


def _rules_semantic_problems(document: _Document) -> list[Problem]:
    """Friendly versions of the schema's pattern checks, and a second line of defence."""
    data = document.data
    agents = data.get("agents") if isinstance(data, dict) else None
    if not isinstance(agents, dict):
        return []
    problems = []
    for agent_id, body in agents.items():
        if not policy.is_valid_agent_id(agent_id):
            problems.append(document.problem(("agents", agent_id), agent_id_message(agent_id)))
        if isinstance(body, dict):
            problems += _rule_set_problems(document, ("agents", agent_id), body)
    return problems


def _rule_set_problems(document: _Document, agent_path: JsonPath, body: dict) -> list[Problem]:
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


def _pattern_list_problems(document: _Document, path: JsonPath, patterns: Any) -> list[Problem]:
    if not isinstance(patterns, list):
        return []
    return [
        document.problem(path + (index,), pattern_message(pattern))
        for index, pattern in enumerate(patterns)
        if isinstance(pattern, str) and not policy.is_valid_pattern(pattern)
    ]


# ============================================================================ snapshot


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
    base = f"agents.{agent_id}"
    for kind, patterns in (("allow", agent.allow_servers), ("deny", agent.deny_servers)):
        for index, pattern in enumerate(patterns):
            if not policy.is_wildcard(pattern):
                yield f"{base}.{kind}.servers[{index}]", pattern
    for kind, tools in (("allow", agent.allow_tools), ("deny", agent.deny_tools)):
        for key in tools:
            if key != policy.ALL_SERVERS_KEY:
                yield f"{base}.{kind}.tools.{key}", key


def build_snapshot(servers: ServersConfig, rules: RulesConfig) -> Snapshot:
    return Snapshot(servers=servers, rules=rules,
                    warnings=undefined_server_warnings(servers, rules))


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


# ============================================================================ locating files


def find_config_paths(
    environ: Mapping[str, str], cwd: Path, home: Path, bundled: Path
) -> tuple[Path, Path]:
    """(servers file, rules file), each chosen on its own: the environment variable, else
    the working directory, else ~/.config/agent-mcp-gateway, else the bundled default."""
    return (
        _find_one(MCP_CONFIG_ENV, MCP_CONFIG_NAME, environ, cwd, home, bundled),
        _find_one(RULES_ENV, RULES_NAME, environ, cwd, home, bundled),
    )


def _find_one(
    variable: str, name: str, environ: Mapping[str, str], cwd: Path, home: Path, bundled: Path
) -> Path:
    explicit = environ.get(variable)
    if explicit:
        # Taken as given even if missing: loading then fails loudly instead of quietly
        # using some other file.
        return _expand(explicit, cwd, home)
    for candidate in (cwd / name, home / USER_CONFIG_DIR / name):
        if candidate.is_file():
            return candidate
    return bundled / name


def _expand(value: str, cwd: Path, home: Path) -> Path:
    if value == "~" or value.startswith("~/"):
        return home / value[2:]
    return cwd / value  # an absolute value replaces cwd


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
        warnings += [spec.unusable for spec in servers.servers.values() if spec.unusable]
    if servers is not None and rules is not None:
        warnings += undefined_server_warnings(servers, rules)
    return problems, warnings
