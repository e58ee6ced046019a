"""The gateway tools as advertised: each one's description and input schema."""

from __future__ import annotations

from typing import Any

_AGENT = {"type": "string", "description": "Your agent id, if assigned."}
_SERVER = {"type": "string", "description": "Server name."}
_SEARCHED = {"type": "string", "description": "Omit to search all servers."}

DEFINITIONS: dict[str, dict[str, Any]] = {
    "list_servers": {
        "description": "List MCP servers you may use and what each is for. Start here.",
        "properties": {
            "agent_id": _AGENT,
            "include_metadata": {"type": "boolean", "description": "Add transport, command/url."},
        },
        "required": [],
    },
    "get_server_tools": {
        "description": "Get definitions of tools you may call. Filter to save context.",
        "properties": {
            "agent_id": _AGENT,
            "server": _SEARCHED,
            "names": {"type": "string", "description": "Comma-separated names."},
            "pattern": {"type": "string", "description": "Name pattern: *, prefix* or *suffix."},
            "query": {"type": "string", "description": "Search words."},
            "limit": {"type": "integer", "minimum": 1},
            "max_schema_tokens": {"type": "integer", "minimum": 1, "description": "Token budget for definitions."},
        },
        "required": [],
    },
    "execute_tool": {
        "description": "Call a tool on a server; returns that tool's own result.",
        "properties": {
            "agent_id": _AGENT,
            "server": _SERVER,
            "tool": {"type": "string", "description": "Tool name."},
            "args": {"type": "object", "description": "Per the tool's inputSchema."},
            "timeout_ms": {"type": "integer", "minimum": 1, "description": "Time limit."},
            "max_result_tokens": {"type": "integer", "minimum": 1},
        },
        "required": ["server", "tool", "args"],
    },
    "get_gateway_status": {
        "description": "Gateway diagnostics: config, reload status, metrics (debug mode).",
        "properties": {"agent_id": _AGENT},
        "required": [],
    },
}


def input_schema(definition: dict[str, Any], advertise_agent_id: bool = True) -> dict[str, Any]:
    properties = definition["properties"]
    if not advertise_agent_id:
        properties = {key: value for key, value in properties.items() if key != "agent_id"}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if definition["required"]:
        schema["required"] = definition["required"]
    schema["additionalProperties"] = False
    return schema
