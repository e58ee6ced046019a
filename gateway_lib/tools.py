"""The gateway's own tools: list_servers, get_server_tools, execute_tool, get_gateway_status.

Each call takes one config snapshot at its start and uses it throughout, so the policy
check and the downstream call always see the same config. Every call is audited and
measured, whatever its outcome.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import policy
from .errors import (
    DeniedByPolicy,
    DownstreamError,
    GatewayError,
    InvalidArguments,
    InvalidParams,
    RequestCancelled,
    ServerUnavailable,
    ToolNotFound,
)
from .model import ServerSpec, Snapshot
from .ratelimit import RateLimiter

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_MS = 60_000

_AGENT = {"type": "string", "description": "Your agent id, if assigned."}
_SERVER = {"type": "string", "description": "Server name."}

DEFINITIONS: dict[str, dict[str, Any]] = {
    "list_servers": {
        "description": "List MCP servers you may use and what each is for. Start here.",
        "properties": {
            "agent_id": _AGENT,
            "include_metadata": {"type": "boolean", "description": "Add transport and command/url."},
        },
        "required": [],
    },
    "get_server_tools": {
        "description": "Get definitions of tools you may call on a server. Filter to save context.",
        "properties": {
            "agent_id": _AGENT,
            "server": _SERVER,
            "names": {"type": "string", "description": "Comma-separated tool names."},
            "pattern": {"type": "string", "description": "Name pattern: *, prefix* or *suffix."},
            "max_schema_tokens": {"type": "integer", "minimum": 1, "description": "Token budget for definitions."},
        },
        "required": ["server"],
    },
    "execute_tool": {
        "description": "Call a tool on a server; returns that tool's own result.",
        "properties": {
            "agent_id": _AGENT,
            "server": _SERVER,
            "tool": {"type": "string", "description": "Tool name."},
            "args": {"type": "object", "description": "Arguments per the tool's inputSchema."},
            "timeout_ms": {"type": "integer", "minimum": 1, "description": "Time limit."},
        },
        "required": ["server", "tool", "args"],
    },
    "get_gateway_status": {
        "description": "Gateway diagnostics: config, reload status, metrics (debug mode).",
        "properties": {"agent_id": _AGENT},
        "required": [],
    },
}
DEBUG_ONLY = frozenset({"get_gateway_status"})


def _input_schema(definition: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": definition["properties"]}
    if definition["required"]:
        schema["required"] = definition["required"]
    schema["additionalProperties"] = False
    return schema


def object_result(value: dict[str, Any]) -> dict[str, Any]:
    """A tool result carrying `value` both as structuredContent and as one JSON text block."""
    return {
        "content": [{"type": "text", "text": json.dumps(value, ensure_ascii=False)}],
        "structuredContent": value,
        "isError": False,
    }


def estimate_tokens(value: Any) -> int:
    return math.ceil(len(json.dumps(value, ensure_ascii=False, separators=(",", ":"))) / 4)


@dataclass
class CallRecord:
    """What the audit line and the metrics say about one call; filled in as the call goes."""

    tool: str
    arguments: dict[str, Any]
    agent: str | None = None
    decision: str | None = None
    rule: str | None = None
    outcome: str = "ok"
    error_code: str | None = None
    started: float = field(default_factory=time.perf_counter)

    def audit_fields(self) -> dict[str, Any]:
        args = self.arguments.get("args")
        return {
            # Unresolved (refused): the id as the call gave it, so a refusal shows who tried.
            "agent": self.agent if self.agent is not None else _str_or_none(self.arguments.get("agent_id")),
            "tool": self.tool,
            "server": _str_or_none(self.arguments.get("server")),
            "downstream_tool": _str_or_none(self.arguments.get("tool")),
            "arg_names": sorted(args) if isinstance(args, dict) else None,
            "decision": self.decision,
            "rule": self.rule,
            "outcome": self.outcome,
            "error_code": self.error_code,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
        }


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ToolSettings:
    debug: bool = False
    default_agent: str | None = None  # GATEWAY_DEFAULT_AGENT
    pinned_agent: str | None = None  # --agent / GATEWAY_AGENT
    default_timeout_ms: int = DEFAULT_TIMEOUT_MS
    max_result_bytes: int | None = None  # a larger downstream result is refused, not passed on


class GatewayTools:
    def __init__(self, store, downstream, catalog, slots, audit, metrics, settings: ToolSettings,
                 status_extra: Callable[[], dict[str, Any]] = dict, limiter: RateLimiter | None = None):
        self._store = store
        self._downstream = downstream
        self._catalog = catalog
        self._slots = slots
        self._audit = audit
        self._metrics = metrics
        self._settings = settings
        self._status_extra = status_extra
        self._limiter = limiter if limiter is not None else RateLimiter()
        self._handlers = {
            "list_servers": self._list_servers,
            "get_server_tools": self._get_server_tools,
            "execute_tool": self._execute_tool,
        }
        if settings.debug:
            self._handlers["get_gateway_status"] = self._get_gateway_status
        self._definitions = [
            {"name": name, "description": DEFINITIONS[name]["description"], "inputSchema": _input_schema(DEFINITIONS[name])}
            for name in self._handlers
        ]
        self._validators = {d["name"]: _compile(d["inputSchema"]) for d in self._definitions}

    def definitions(self) -> list[dict[str, Any]]:
        return self._definitions

    def call(self, name: str, arguments: dict[str, Any], cancel: threading.Event,
             caller: str | None = None) -> dict[str, Any]:
        """Run one gateway tool; `caller` is the agent the transport authenticated, if any."""
        handler = self._handlers.get(name)
        if handler is None:
            raise InvalidParams(f"Unknown tool {name!r}")
        record = CallRecord(name, arguments)
        snapshot = self._store.current()
        try:
            self._check_arguments(name, arguments)
            record.agent = policy.resolve_agent(
                snapshot.rules, arguments.get("agent_id"),
                default_agent=self._settings.default_agent, pinned=self._settings.pinned_agent,
                authenticated=caller,
            )
            self._limiter.take(record.agent, snapshot.rules.agents[record.agent].rate_limit)
            return handler(snapshot, record, arguments, cancel)
        except InvalidParams:
            record.outcome, record.error_code = "invalid_params", "INVALID_PARAMS"
            raise
        except GatewayError as exc:
            record.outcome, record.error_code = "error", exc.code
            if record.agent is None:  # the identity itself was refused
                record.decision = "deny"
            return exc.to_result()
        except RequestCancelled:
            record.outcome = "cancelled"
            raise
        except BaseException:
            record.outcome, record.error_code = "internal_error", "INTERNAL_ERROR"
            raise
        finally:
            self._finish(record)

    def _finish(self, record: CallRecord) -> None:
        fields = record.audit_fields()
        self._audit.record("tool_call", **fields)
        failed = record.outcome not in ("ok", "tool_error")
        self._metrics.observe(record.agent or "(unresolved)", record.tool, fields["duration_ms"], failed,
                              outcome=record.outcome)

    def _check_arguments(self, name: str, arguments: dict[str, Any]) -> None:
        problems = sorted(_describe(e) for e in self._validators[name].iter_errors(arguments))
        if problems:
            raise InvalidParams(f"Invalid arguments for {name}: " + "; ".join(problems))

    # --- list_servers ----------------------------------------------------------------

    def _list_servers(self, snapshot: Snapshot, record: CallRecord, arguments: dict, cancel) -> dict:
        servers = []
        for name, spec in sorted(snapshot.servers.servers.items()):
            if not policy.decide_server(snapshot.rules, record.agent, name).allowed:
                continue
            entry: dict[str, Any] = {"name": name, "description": spec.description}
            if arguments.get("include_metadata"):
                entry.update(spec.public_metadata())
            servers.append(entry)
        record.decision = "allow"
        return object_result({"servers": servers})

    # --- get_server_tools ------------------------------------------------------------

    def _get_server_tools(self, snapshot: Snapshot, record: CallRecord, arguments: dict, cancel) -> dict:
        server = arguments["server"]
        spec = self._allowed_server(snapshot, record, server)
        pattern = arguments.get("pattern")
        if pattern is not None and not policy.is_valid_pattern(pattern):
            raise InvalidParams(f"pattern {pattern!r} is not allowed: use '*', 'prefix*', '*suffix' or an exact name")
        wanted = _split_names(arguments.get("names"))
        tools = self._catalog.tools(spec, self._timeout_s(spec, None), cancel, agent=record.agent)
        permitted = [t for t in tools if policy.decide_tool(snapshot.rules, record.agent, server, t["name"]).allowed]
        chosen = [
            t for t in permitted
            if (wanted is None or t["name"] in wanted) and (pattern is None or policy.matches(pattern, t["name"]))
        ]
        budget = arguments.get("max_schema_tokens")
        returned, used = [], 0
        for tool in chosen:
            cost = estimate_tokens(tool)
            if budget is not None and used + cost > budget:
                break
            returned.append(tool)
            used += cost
        return object_result({
            "server": server,
            "tools": returned,
            "total_available": len(permitted),
            "returned": len(returned),
            "tokens_used": used,
        })

    # --- execute_tool ----------------------------------------------------------------

    def _execute_tool(self, snapshot: Snapshot, record: CallRecord, arguments: dict, cancel) -> dict:
        server, tool, args = arguments["server"], arguments["tool"], arguments["args"]
        decision = policy.decide_tool(snapshot.rules, record.agent, server, tool)
        record.decision, record.rule = ("allow" if decision.allowed else "deny"), decision.rule
        if not decision.allowed:
            raise DeniedByPolicy(
                f"Agent {record.agent!r} may not call tool {tool!r} on server {server!r}",
                rule=decision.rule,
            )
        spec = self._defined_server(snapshot, server)
        self._check_sendable(tool, args)  # before any session: no server could read them
        timeout_s = self._timeout_s(spec, arguments.get("timeout_ms"))
        deadline = time.monotonic() + timeout_s
        definition = self._catalog.known(spec, tool)
        if definition is not None:
            # A cache hit: bad arguments are refused here, before any session is opened.
            self._check_downstream_arguments(spec, definition, args)

        def check_listed(tools: list[dict]) -> None:
            # Runs inside the call's own session, between its tools/list and tools/call.
            self._catalog.store(spec, tools)
            listed = next((t for t in tools if t.get("name") == tool), None)
            if listed is None:
                raise ToolNotFound(f"Server {server!r} has no tool {tool!r}", server=server, tool=tool)
            self._check_downstream_arguments(spec, listed, args)

        # The answer comes as soon as the result does, but the slot is given back only once
        # the session has closed: a server process still winding down counts against its
        # max_concurrency.
        release = self._slots.acquire(spec, deadline, cancel)
        remaining = max(deadline - time.monotonic(), 0.001)
        if definition is not None:
            result = self._downstream.call_tool(spec, tool, args, remaining, cancel,
                                                 agent=record.agent, on_closed=release)
        else:
            # The cache cannot vouch for the tool (empty, expired, or a tool it does not
            # know): list once and call in the same session, one server start-up.
            result = self._downstream.list_and_call_tool(spec, tool, args, remaining, cancel,
                                                         check=check_listed, agent=record.agent, on_closed=release)
        self._check_result_size(server, tool, result)
        if result.get("isError"):
            record.outcome = "tool_error"
        return result

    def _check_result_size(self, server: str, tool: str, result: dict) -> None:
        limit = self._settings.max_result_bytes
        if limit is None:
            return
        size = len(json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
        if size > limit:
            raise DownstreamError(
                f"Tool {tool!r} on server {server!r} returned {size} bytes, more than the gateway's "
                f"limit of {limit} bytes; ask it for less",
                size=size, limit=limit,
            )

    @staticmethod
    def _check_sendable(tool: str, args: dict) -> None:
        try:
            json.dumps(args, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            # Valid JSON on our side (a \ud800 escape), but no UTF-8 message can carry it.
            problem = "(root): contains a lone surrogate (\\ud800-\\udfff), which cannot be sent as UTF-8"
            raise InvalidArguments(f"Arguments for {tool!r} cannot be sent: {problem}", problems=[problem])

    def _check_downstream_arguments(self, spec: ServerSpec, definition: dict, args: dict) -> None:
        validator = self._catalog.validator(spec, definition)
        if validator is None:
            return
        try:
            problems = sorted(_describe(e) for e in validator.iter_errors(args))
        except Exception:  # an unresolvable $ref and the like: let the server judge
            logger.warning("Could not check arguments of %r on %r against its schema", definition["name"], spec.name)
            return
        if problems:
            raise InvalidArguments(
                f"Arguments do not match the inputSchema of {definition['name']!r}: " + "; ".join(problems),
                problems=problems,
            )

    # --- get_gateway_status ----------------------------------------------------------

    def _get_gateway_status(self, snapshot: Snapshot, record: CallRecord, arguments: dict, cancel) -> dict:
        rules = snapshot.rules
        status = {
            "config_paths": {"mcp_config": snapshot.servers.path, "gateway_rules": rules.path},
            "policy_state": {
                "agent_ids": sorted(rules.agents),
                "defaults": {"deny_on_missing_agent": rules.deny_on_missing_agent},
                "default_agent": self._settings.default_agent,
                "pinned_agent": self._settings.pinned_agent,
            },
            "available_servers": sorted(snapshot.servers.servers),
            "warnings": list(snapshot.warnings),
            "metrics": self._metrics.snapshot(),
            "downstream": {**self._downstream.status(), "queued_calls": self._slots.waiting},
        }
        status.update(self._status_extra())
        return object_result(status)

    # --- shared ----------------------------------------------------------------------

    def _allowed_server(self, snapshot: Snapshot, record: CallRecord, server: str) -> ServerSpec:
        decision = policy.decide_server(snapshot.rules, record.agent, server)
        record.decision, record.rule = ("allow" if decision.allowed else "deny"), decision.rule
        if not decision.allowed:
            raise DeniedByPolicy(f"Agent {record.agent!r} may not use server {server!r}", rule=decision.rule)
        return self._defined_server(snapshot, server)

    @staticmethod
    def _defined_server(snapshot: Snapshot, server: str) -> ServerSpec:
        spec = snapshot.servers.servers.get(server)
        if spec is None:
            raise ServerUnavailable(f"Server {server!r} is not defined in the gateway's .mcp.json", server=server)
        return spec

    def _timeout_s(self, spec: ServerSpec, requested_ms: int | None) -> float:
        return (requested_ms or spec.timeout_ms or self._settings.default_timeout_ms) / 1000


def _split_names(names: str | None) -> set[str] | None:
    if names is None:
        return None
    return {n.strip() for n in names.split(",") if n.strip()}


def _compile(schema: dict[str, Any]) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema)


def _describe(error: Any) -> str:
    location = "/".join(str(p) for p in error.absolute_path)
    return f"{location or '(root)'}: {error.message}"
