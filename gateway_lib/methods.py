"""The MCP methods the gateway answers, as an explicit table over the JSON-RPC endpoint.

Holds the little protocol state there is: whether `initialize` happened and which version
was agreed, a 2026-07-28 client's execute_tool calls parked between input_required rounds
(`input_rounds.py`), and the client's roots as last fetched (`client_roots.py`). The tools
themselves live in tools.py.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Protocol

from . import __version__
from .client_roots import ClientRoots
from .errors import GatewayError, InvalidParams, InvalidRequest, UnsupportedProtocolVersion
from .input_rounds import InputRounds, Owner
from .relay import CLIENT_REQUESTS, DEFAULT_LOG_LEVEL, LOG_LEVELS, MODERN_VERSION, ClientLink
from .rpc import Method, RequestContext

logger = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")  # newest first
BATCH_VERSION = "2025-03-26"  # the only version whose spec has JSON-RPC batches

# 2026-07-28 has no initialize: each request names its version and the client's
# capabilities in `_meta`, under these reserved keys.
PROTOCOL_VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY = "io.modelcontextprotocol/clientCapabilities"
LOG_LEVEL_KEY = "io.modelcontextprotocol/logLevel"
SERVER_INFO_KEY = "io.modelcontextprotocol/serverInfo"
_RESERVED_META_PREFIX = "io.modelcontextprotocol/"
IN_ROUNDS = "execute_tool"  # the one gateway tool whose downstream may ask the client for input
_RELAYABLE = frozenset(capability for _, capability, _ in CLIENT_REQUESTS.values())

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
        self._capabilities: dict = {}  # what the client declared at initialize
        self._log_level = DEFAULT_LOG_LEVEL  # set by logging/setLevel
        self._rounds = InputRounds()
        self._roots = ClientRoots()
        self._peer: Any = None  # the channel to the client outside any one request (roots refetches), if any

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
            "logging/setLevel": Method(self.set_log_level, inline=True),
            "server/discover": Method(self.discover, inline=True),
        }

    def notifications(self) -> dict[str, Callable[[Any], None]]:
        return {"notifications/initialized": self.initialized,
                "notifications/roots/list_changed": self.roots_changed}

    def capabilities(self) -> dict:
        return {"tools": {"listChanged": False}, "logging": {}}

    # --- lifecycle -------------------------------------------------------------------

    def initialize(self, params: Any, context: RequestContext) -> dict:
        params = require_object(params)
        with self._lock:
            if self._version is not None:
                raise InvalidRequest("The session is already initialized")
            self._version = negotiate_version(params.get("protocolVersion"))
            capabilities = params.get("capabilities")
            self._capabilities = dict(capabilities) if isinstance(capabilities, dict) else {}
        client = params.get("clientInfo") if isinstance(params.get("clientInfo"), dict) else {}
        # clientInfo is logged for diagnosis only; it is never trusted for access decisions.
        logger.info("Client %r initialized with protocol %s", client.get("name"), self._version)
        return {
            "protocolVersion": self._version,
            "capabilities": self.capabilities(),
            "serverInfo": {"name": SERVER_NAME, "version": __version__},
            "instructions": INSTRUCTIONS,
        }

    def initialized(self, params: Any) -> None:
        self._on_initialized()

    def use_peer(self, peer: Any) -> None:
        """What the gateway may send the client outside any one request goes through `peer`
        (stdio: the endpoint's own); without it, changed roots are dropped, not refetched."""
        self._peer = peer

    def roots_changed(self, params: Any) -> None:
        """The client's roots changed: the ones kept are dropped and fetched anew (if it declared roots)."""
        self._roots.changed(self._peer if "roots" in self._capabilities else None)

    def ping(self, params: Any, context: RequestContext) -> dict:
        return {}

    def discover(self, params: Any, context: RequestContext) -> dict:
        """server/discover (2026-07-28): the versions, capabilities and identity of the gateway."""
        self._modern_envelope(require_object(params), required=False)
        return {
            "supportedVersions": [MODERN_VERSION],
            "capabilities": self.capabilities(),
            "instructions": INSTRUCTIONS,
            "resultType": "complete",
            "ttlMs": 0,
            "cacheScope": "public",
            "_meta": {SERVER_INFO_KEY: {"name": SERVER_NAME, "version": __version__}},
        }

    def set_log_level(self, params: Any, context: RequestContext) -> dict:
        params = require_object(params)
        if self._modern_envelope(params) is None:
            self._require_initialized()
        level = params.get("level")
        if level not in LOG_LEVELS:
            raise InvalidParams(f"logging/setLevel 'level' must be one of {', '.join(LOG_LEVELS)}")
        self._log_level = level
        return {}

    # --- tools -----------------------------------------------------------------------

    def list_tools(self, params: Any, context: RequestContext) -> dict:
        params = require_object(params)
        modern = self._modern_envelope(params)
        if modern is None:
            self._require_initialized()
            return {"tools": self._tools.definitions()}
        return {"tools": self._tools.definitions(), "resultType": "complete", "ttlMs": 0, "cacheScope": "public"}

    def call_tool(self, params: Any, context: RequestContext) -> dict:
        params = require_object(params)
        modern = self._modern_envelope(params)
        if modern is None:
            self._require_initialized()
        name = params.get("name")
        if not isinstance(name, str):
            raise InvalidParams("tools/call needs a string 'name'")
        arguments = params.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise InvalidParams("tools/call 'arguments' must be an object")
        link = self._client_link(params, modern, context)
        if modern is not None and (params.get("requestState") is not None or self._in_rounds(name, link)):
            result = self._call_in_rounds(name, arguments, params, link, context)
        else:
            result = self._tools.call(name, arguments, context.cancelled, caller=context.caller, client=link)
        if modern is None:
            result.pop("resultType", None)  # 2026-only; older clients do not expect it
            if "structuredContent" in result and not isinstance(result["structuredContent"], dict):
                # Before 2026-07-28 structured content is an object; the text blocks still carry it.
                del result["structuredContent"]
        else:
            result.setdefault("resultType", "complete")
        return result

    # --- input_required rounds (2026-07-28) -------------------------------------------

    @staticmethod
    def _in_rounds(name: str, link: ClientLink) -> bool:
        """Whether this call may need rounds: execute_tool, for a client able to answer something."""
        return name == IN_ROUNDS and link.peer is not None and bool(_RELAYABLE & set(link.capabilities))

    def _call_in_rounds(self, name: str, arguments: dict, params: dict, link: ClientLink,
                        context: RequestContext) -> dict:
        """The call runs on while the client answers its downstream's requests (input_required);
        a retry with `requestState` resumes it."""
        owner = Owner(context.caller, name, arguments)
        state = params.get("requestState")
        try:
            if state is None:
                def work(call_link: ClientLink, cancel: threading.Event) -> dict:
                    return self._tools.call(name, arguments, cancel, caller=context.caller, client=call_link)

                return self._rounds.start(owner, link, context.cancelled, work)
            if not isinstance(state, str):
                raise InvalidParams("tools/call 'requestState' must be a string")
            responses = params.get("inputResponses") or {}
            if not isinstance(responses, dict) or not all(isinstance(v, dict) for v in responses.values()):
                raise InvalidParams("tools/call 'inputResponses' must be an object of result objects")
            return self._rounds.resume(state, owner, responses, link, context.cancelled)
        except GatewayError as exc:  # a state that cannot be redeemed: a tool error the model can read
            return exc.to_result()

    # --- the two generations ---------------------------------------------------------

    @staticmethod
    def _modern_envelope(params: dict, required: bool = True) -> dict | None:
        """The `_meta` of a 2026-07-28 request (None for an older one); refuses other versions.

        A request is 2026-style when its `_meta` names a protocol version: those carry the
        client's capabilities per request, and need no initialize.
        """
        meta = params.get("_meta")
        if not isinstance(meta, dict) or PROTOCOL_VERSION_KEY not in meta:
            return None
        version = meta[PROTOCOL_VERSION_KEY]
        if version != MODERN_VERSION:
            raise UnsupportedProtocolVersion(
                f"Protocol version {version!r} is not supported by this request form",
                data={"supported": [MODERN_VERSION], "requested": version},
            )
        capabilities = meta.get(CLIENT_CAPABILITIES_KEY)
        if required and not isinstance(capabilities, dict):
            raise InvalidParams(f"A {MODERN_VERSION} request needs _meta {CLIENT_CAPABILITIES_KEY!r} as an object")
        return meta

    def _client_link(self, params: dict, modern: dict | None, context: RequestContext) -> ClientLink:
        meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
        forwarded = {k: v for k, v in meta.items() if k != "progressToken" and not k.startswith(_RESERVED_META_PREFIX)}
        token = meta.get("progressToken")
        if not isinstance(token, (str, int)) or isinstance(token, bool):
            token = None
        if context.peer is None:
            # No channel to the client (an HTTP POST that does not accept an event stream): declare no
            # capabilities, so downstream requests get the SDK's refusal at once, and relay nothing.
            return ClientLink(None, MODERN_VERSION if modern is not None else self._version, {}, None,
                              None, forwarded, context.cancelled)
        if modern is None:
            return ClientLink(context.peer, self._version, dict(self._capabilities), self._log_level,
                              token, forwarded, context.cancelled, roots=self._roots)
        level = modern.get(LOG_LEVEL_KEY)  # 2026 clients opt in to log messages per request
        return ClientLink(context.peer, MODERN_VERSION, dict(modern[CLIENT_CAPABILITIES_KEY]),
                          level if level in LOG_LEVELS else None, token, forwarded, context.cancelled,
                          roots=self._roots)

    def _require_initialized(self) -> None:
        if self._version is None:
            raise InvalidRequest("The session is not initialized: send 'initialize' first")
