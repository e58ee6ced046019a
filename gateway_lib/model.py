"""The immutable config snapshot every request reads from.

A reload builds new objects and swaps one reference; nothing here is ever mutated, so a
request that took a snapshot at its start sees one consistent config until it ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


def _empty() -> Mapping:
    return MappingProxyType({})


STDIO = "stdio"
HTTP = "http"
SSE = "sse"

PER_CALL = "per-call"
KEEP_ALIVE = "keep-alive"

DEFAULT_IDLE_TIMEOUT_MS = 300_000

AUTHORIZATION_CODE = "authorization_code"
CLIENT_CREDENTIALS = "client_credentials"


@dataclass(frozen=True)
class OAuthSettings:
    """An http/sse entry's `oauth` object (Claude Code's keys, plus the client-credentials ones).

    All None is the common case: discovery, dynamic registration, a browser sign-in.
    `client_secret` is a secret: kept out of repr and never logged.
    """

    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    callback_port: int | None = None
    auth_server_metadata_url: str | None = None
    scopes: str | None = None
    grant: str = AUTHORIZATION_CODE
    private_key_file: str | None = None  # absolute: resolved against the .mcp.json's folder
    signing_algorithm: str | None = None


DEFAULT_OAUTH = OAuthSettings()


@dataclass(frozen=True)
class ServerSpec:
    """One downstream server, with ${VAR} references already substituted.

    `env` and `headers` hold secrets: they are kept out of repr and never logged.
    `${VAR}` values are secrets too: what the gateway shows of `command` and `url`
    (`shown_command`, `shown_url`) is the text as written, references unexpanded.
    `unusable` is set when the entry cannot be launched (an unset variable, say); the
    server is still listed, and calls to it fail with that one sentence.
    """

    name: str
    transport: str
    description: str = ""
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=_empty, repr=False)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=_empty, repr=False)
    timeout_ms: int | None = None
    max_concurrency: int | None = None
    session: str = PER_CALL
    idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS
    spare: bool = True  # a per-call stdio server may have a warm spare session (see downstream.spares)
    max_result_tokens: int | None = None  # this server's result budget (budget.py)
    unusable: str | None = None
    oauth: OAuthSettings | None = DEFAULT_OAUTH  # None: `"oauth": false`, a 401 is just an error
    headers_helper: str | None = None  # a shell command printing a JSON object of headers
    written_command: str | None = None  # as in .mcp.json, before ${VAR} substitution
    written_url: str | None = None

    @property
    def shown_command(self) -> str | None:
        return self.written_command if self.written_command is not None else self.command

    @property
    def shown_url(self) -> str | None:
        return self.written_url if self.written_url is not None else self.url

    def public_metadata(self) -> dict[str, object]:
        """What `list_servers(include_metadata=true)` may show: never env, headers or
        the value of a ${VAR}."""
        meta: dict[str, object] = {"transport": self.transport}
        if self.transport == STDIO:
            meta["command"] = self.shown_command
        else:
            meta["url"] = self.shown_url
        return meta


@dataclass(frozen=True)
class ServersConfig:
    """The parsed `.mcp.json`, and what is worth a warning in it (entries skipped or
    unusable, unknown keys)."""

    path: str
    servers: Mapping[str, ServerSpec]
    warnings: tuple[str, ...] = ()  # keys that are ignored, or given twice


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: `burst` calls at once, refilled at `calls_per_minute`."""

    calls_per_minute: float
    burst: int


@dataclass(frozen=True)
class AgentRules:
    """One agent's rules; each pattern keeps its index so denials can name the rule.

    `token_sha256` holds the hashes of the agent's HTTP bearer tokens: kept out of repr,
    never logged, audited or shown in status.
    """

    allow_servers: tuple[str, ...] = ()
    deny_servers: tuple[str, ...] = ()
    allow_tools: Mapping[str, tuple[str, ...]] = field(default_factory=_empty)
    deny_tools: Mapping[str, tuple[str, ...]] = field(default_factory=_empty)
    token_sha256: tuple[str, ...] = field(default=(), repr=False)
    rate_limit: RateLimit | None = None
    # Kinds of server->client requests ("sampling", "elicitation", "roots") relayed on this
    # agent's calls; None means the allow list was not written, so every kind is allowed.
    allow_client_requests: tuple[str, ...] | None = None
    deny_client_requests: tuple[str, ...] = ()


@dataclass(frozen=True)
class RulesConfig:
    """The parsed `.mcp-gateway-rules.json`."""

    path: str
    agents: Mapping[str, AgentRules]
    deny_on_missing_agent: bool = False
    on_tool_change: str = "block"  # what a tool that differs from its pin gets (pins.py)


@dataclass(frozen=True)
class Snapshot:
    """Both files as one consistent view, plus the warnings that need both to compute."""

    servers: ServersConfig
    rules: RulesConfig
    rule_warnings: tuple[str, ...] = ()  # rules naming servers that .mcp.json does not define

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every warning in force, of both files: the one list that status and the log show."""
        return self.servers.warnings + self.rule_warnings
