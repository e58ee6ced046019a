"""A downstream MCP server on streamable HTTP, built on the official SDK's MCPServer.

Usage: sdk_http_server.py --port N [--tag TAG]

Serves http://127.0.0.1:N/mcp. Nothing useful goes to stdout; uvicorn logs go
to stderr. Tests wait for readiness with `harness.wait_for_port`. The tag only
marks the process in /proc/*/cmdline. Tools: echo(text), add(a, b) with
structured output, sleep(seconds).
"""

import argparse

import anyio
from pydantic import BaseModel

from mcp.server.mcpserver import MCPServer

server = MCPServer("sdk-http", log_level="WARNING")


class Sum(BaseModel):
    sum: float


@server.tool(structured_output=False)
def echo(text: str) -> str:
    """Return the given text."""
    return text


@server.tool()
def add(a: float, b: float) -> Sum:
    """Add two numbers; the result is structured."""
    return Sum(sum=a + b)


@server.tool(structured_output=False)
async def sleep(seconds: float) -> str:
    """Sleep for the given seconds, then answer."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    server.run("streamable-http", host="127.0.0.1", port=args.port, streamable_http_path="/mcp")


if __name__ == "__main__":
    main()
