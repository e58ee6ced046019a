"""The SDK's own MCP server over HTTP, for tests/test_downstream.py.

    python downstream_http.py --port N [--transport streamable-http|sse] [--tag TAG]
"""

import sys

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("downstream-http-fixture", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Echo text."""
    return text


@server.tool()
def header(name: str, ctx: Context) -> str:
    """Return one request header as the server received it."""
    return (ctx.headers or {}).get(name, "<missing>")


def main() -> None:
    port = int(sys.argv[sys.argv.index("--port") + 1])
    transport = sys.argv[sys.argv.index("--transport") + 1] if "--transport" in sys.argv else "streamable-http"
    server.run(transport, host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
