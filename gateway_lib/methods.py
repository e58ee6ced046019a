"""The MCP methods the gateway answers, as an explicit table over the JSON-RPC endpoint.

Holds the little protocol state there is: whether `initialize` happened and which version
was agreed. The tools themselves live in tools.py.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Protocol

from . import __version__
from .errors import InvalidParams, InvalidRequest
from .rpc import Method, RequestContext

logger = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")  # newest first
BATCH_VERSION = "2025-03-26"  # the only version whose spec has JSON-RPC batches

SERVER_NAME = "agent-mcp-gateway"
INSTRUCTIONS = (
    "Tools of other MCP servers are reached through this gateway: list_servers, then "
    "get_server_tools for the one you need, then execute_tool."
)


def negotiate_version(requested: Any) -> str:
    return requested if requested in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[0]


def require_object(params: Any) -> dict:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidParams("params must be an object")
    return params


class ToolRunner(Protocol):
    """What the MCP methods need of the gateway tools (tools.GatewayTools)."""

    def definitions(self) -> list[dict[str, Any]]: ...

    def call(self, name: str, arguments: dict[str, Any], cancel: threading.Event,
             caller: str | None = None) -> dict[str, Any]: ...


class McpProtocol:
    """Lifecycle and dispatch of MCP methods to the gateway tools."""

    def __init__(self, tools: ToolRunner, on_initialized: Callable[[], None] = lambda: None):
        self._tools = tools
        self._on_initialized = on_initialized
        self._lock = threading.Lock()
        self._version: str | None = None

    @property
    def version(self) -> str | None:
        """The agreed protocol version; None until `initialize` succeeded (HTTP keeps a session only then)."""
        return self._version

    def batches_allowed(self) -> bool:
        return self._version == BATCH_VERSION

    def methods(self) -> dict[str, Method]:
        return {
            "initialize": Method(self.initialize, inline=True),
            "ping": Method(self.ping, inline=True),
            "tools/list": Method(self.list_tools, inline=True),
            "tools/call": Method(self.call_tool),
        }

    def notifications(self) -> dict[str, Callable[[Any], None]]:
        return {"notifications/initialized": self.initialized}

    # --- lifecycle -------------------------------------------------------------------

    def initialize(self, params: Any, context: RequestContext) -> dict:
        params = require_object(params)
        with self._lock:
            if self._version is not None:
                raise InvalidRequest("The session is already initialized")
            self._version = negotiate_version(params.get("protocolVersion"))
        client = params.get("clientInfo") if isinstance(params.get("clientInfo"), dict) else {}
        # clientInfo is logged for diagnosis only; it is never trusted for access decisions.
        logger.info("Client %r initialized with protocol %s", client.get("name"), self._version)
        return {
            "protocolVersion": self._version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": SERVER_NAME, "version": __version__},
            "instructions": INSTRUCTIONS,
        }

    def initialized(self, params: Any) -> None:
        self._on_initialized()

    def ping(self, params: Any, context: RequestContext) -> dict:
        return {}

    # --- tools -----------------------------------------------------------------------

    def list_tools(self, params: Any, context: RequestContext) -> dict:
        self._require_initialized()
        require_object(params)
        return {"tools": self._tools.definitions()}

    def call_tool(self, params: Any, context: RequestContext) -> dict:
        self._require_initialized()
        params = require_object(params)
        name = params.get("name")
        if not isinstance(name, str):
            raise InvalidParams("tools/call needs a string 'name'")
        arguments = params.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise InvalidParams("tools/call 'arguments' must be an object")
        return self._tools.call(name, arguments, context.cancelled, caller=context.caller)

    def _require_initialized(self) -> None:
        if self._version is None:
            raise InvalidRequest("The session is not initialized: send 'initialize' first")
