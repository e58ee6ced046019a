"""Every error the gateway raises on purpose, in two families.

    Exception
    ├── RpcError                  answered as a JSON-RPC error object
    │   ├── ParseError              -32700
    │   ├── InvalidRequest          -32600
    │   ├── MethodNotFound          -32601
    │   ├── InvalidParams           -32602
    │   ├── InternalError           -32603
    │   └── UnsupportedProtocolVersion -32022 (a 2026-07-28 request naming another version)
    ├── RequestCancelled          the client cancelled; nothing is sent
    ├── GatewayError              answered as a tool result with isError: true
    │   ├── DeniedByPolicy          DENIED_BY_POLICY
    │   ├── ServerUnavailable       SERVER_UNAVAILABLE
    │   ├── AuthRequired            AUTH_REQUIRED
    │   ├── ToolNotFound            TOOL_NOT_FOUND
    │   ├── ToolTimeout             TIMEOUT
    │   ├── InvalidArguments        INVALID_ARGUMENTS
    │   ├── DownstreamError         DOWNSTREAM_ERROR
    │   ├── InvalidAgentId          INVALID_AGENT_ID
    │   ├── FallbackAgentNotInRules FALLBACK_AGENT_NOT_IN_RULES
    │   ├── NoFallbackConfigured    NO_FALLBACK_CONFIGURED
    │   ├── RateLimited             RATE_LIMITED (carries retry_after_s)
    │   ├── ToolChanged             TOOL_CHANGED (a definition that differs from its pin)
    │   ├── InputStateUnknown       INPUT_STATE_UNKNOWN (a requestState unknown, used or expired)
    │   └── InputStateMismatch      INPUT_STATE_MISMATCH (a requestState retried by another caller or call)
    └── ConfigError               a config file that cannot be used (carries every problem)

Tool errors are results, not protocol errors, so that the model can read them and adjust.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNSUPPORTED_PROTOCOL_VERSION = -32022

# How the audit log and metrics name a call that ended as a JSON-RPC error.
INVALID_PARAMS_NAME = "INVALID_PARAMS"
INTERNAL_ERROR_NAME = "INTERNAL_ERROR"

# A message longer than this is cut, with a marker: a downstream server's error text (or a
# value quoted back) can be megabytes, and every answer must fit the message limit.
MAX_MESSAGE_CHARS = 4096


def cut(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text`, or its first `limit` characters and a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [cut: {len(text) - limit} more characters]"


class RpcError(Exception):
    """A failure answered with a JSON-RPC error object."""

    code = INTERNAL_ERROR
    default_message = "Internal error"

    def __init__(self, message: str | None = None, data: Any = None):
        self.message = message or self.default_message
        self.data = data
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": cut(self.message)}
        if self.data is not None:
            error["data"] = self.data
        return error


class ParseError(RpcError):
    code = PARSE_ERROR
    default_message = "Parse error"


class InvalidRequest(RpcError):
    code = INVALID_REQUEST
    default_message = "Invalid request"


class MethodNotFound(RpcError):
    code = METHOD_NOT_FOUND
    default_message = "Method not found"


class InvalidParams(RpcError):
    code = INVALID_PARAMS
    default_message = "Invalid params"


class InternalError(RpcError):
    code = INTERNAL_ERROR
    default_message = "Internal error"


class UnsupportedProtocolVersion(RpcError):
    code = UNSUPPORTED_PROTOCOL_VERSION
    default_message = "Unsupported protocol version"


class RequestCancelled(Exception):
    """The client cancelled the request; the endpoint sends no response for it."""


DENIED_BY_POLICY = "DENIED_BY_POLICY"
SERVER_UNAVAILABLE = "SERVER_UNAVAILABLE"
AUTH_REQUIRED = "AUTH_REQUIRED"
TOOL_NOT_FOUND = "TOOL_NOT_FOUND"
TIMEOUT = "TIMEOUT"
INVALID_ARGUMENTS = "INVALID_ARGUMENTS"
DOWNSTREAM_ERROR = "DOWNSTREAM_ERROR"
INVALID_AGENT_ID = "INVALID_AGENT_ID"
FALLBACK_AGENT_NOT_IN_RULES = "FALLBACK_AGENT_NOT_IN_RULES"
NO_FALLBACK_CONFIGURED = "NO_FALLBACK_CONFIGURED"
RATE_LIMITED = "RATE_LIMITED"
TOOL_CHANGED = "TOOL_CHANGED"
INPUT_STATE_UNKNOWN = "INPUT_STATE_UNKNOWN"
INPUT_STATE_MISMATCH = "INPUT_STATE_MISMATCH"


class GatewayError(Exception):
    """A failure of a gateway tool, answered as a tool result the model can read."""

    code = "GATEWAY_ERROR"

    def __init__(self, message: str, **context: Any):
        self.message = message
        self.context = context
        super().__init__(message)

    def to_payload(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": cut(self.message), **self.context}}

    def to_result(self) -> dict[str, Any]:
        payload = self.to_payload()
        return {
            "content": [{"type": "text", "text": json.dumps(payload, ensure_ascii=False)}],
            "structuredContent": payload,
            "isError": True,
        }


class DeniedByPolicy(GatewayError):
    code = DENIED_BY_POLICY


class ServerUnavailable(GatewayError):
    code = SERVER_UNAVAILABLE


class AuthRequired(GatewayError):
    """An OAuth-protected server the gateway holds no usable tokens for, and no sign-in
    finished within the call's deadline."""

    code = AUTH_REQUIRED


class ToolNotFound(GatewayError):
    code = TOOL_NOT_FOUND


class ToolTimeout(GatewayError):
    code = TIMEOUT


class InvalidArguments(GatewayError):
    code = INVALID_ARGUMENTS


class DownstreamError(GatewayError):
    code = DOWNSTREAM_ERROR


class InvalidAgentId(GatewayError):
    code = INVALID_AGENT_ID


class FallbackAgentNotInRules(GatewayError):
    code = FALLBACK_AGENT_NOT_IN_RULES


class NoFallbackConfigured(GatewayError):
    code = NO_FALLBACK_CONFIGURED


class RateLimited(GatewayError):
    code = RATE_LIMITED
class ToolChanged(GatewayError):
    code = TOOL_CHANGED


class InputStateUnknown(GatewayError):
    code = INPUT_STATE_UNKNOWN


class InputStateMismatch(GatewayError):
    code = INPUT_STATE_MISMATCH


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, located as precisely as we can."""

    file: str
    path: str  # JSON path such as "$.mcpServers.db.command"; "$" for the whole file
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}"


class ConfigError(Exception):
    """A config file that cannot be used; carries every problem found, sorted by path."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems, key=lambda p: (p.file, p.line or 0, p.path))
        super().__init__("; ".join(str(p) for p in self.problems))
