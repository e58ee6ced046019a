"""A downstream MCP server built on the official SDK's MCPServer, run here over stdio.

Usage: sdk_stdio_server.py [--tag TAG]

The tag is unused by the server; it only marks the process in /proc/*/cmdline
so a test can find it. Tools: echo(text), add(a, b) with structured output,
sleep(seconds).
"""

import argparse

import anyio
from pydantic import BaseModel

from mcp.server.mcpserver import MCPServer

server = MCPServer("sdk-test-server", log_level="WARNING")


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
    parser.add_argument("--tag", default="")
    parser.parse_args()
    server.run("stdio")


if __name__ == "__main__":
    main()
