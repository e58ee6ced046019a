"""A downstream MCP server built on the official SDK's MCPServer, run here over stdio.

Usage: sdk_stdio_server.py [--tag TAG] [--list-ttl-ms MS]

The tag is unused by the server; it only marks the process in /proc/*/cmdline
so a test can find it. Tools: echo(text), add(a, b) with structured output,
sleep(seconds). Its tools/list says `ttlMs: 0` (the SDK's default: re-list every
time) unless --list-ttl-ms gives it a lifetime (a server whose list is stable).
"""

import argparse

import anyio
from pydantic import BaseModel

from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer


class Sum(BaseModel):
    sum: float


def echo(text: str) -> str:
    """Return the given text."""
    return text


def add(a: float, b: float) -> Sum:
    """Add two numbers; the result is structured."""
    return Sum(sum=a + b)


async def sleep(seconds: float) -> str:
    """Sleep for the given seconds, then answer."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


def build(list_ttl_ms: int | None) -> MCPServer:
    hints = {"tools/list": CacheHint(ttl_ms=list_ttl_ms, scope="public")} if list_ttl_ms is not None else None
    server = MCPServer("sdk-test-server", log_level="WARNING", cache_hints=hints)
    server.tool(structured_output=False)(echo)
    server.tool()(add)
    server.tool(structured_output=False)(sleep)
    return server


server = build(None)  # the default one; sdk_http_server.py serves it over HTTP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="")
    parser.add_argument("--list-ttl-ms", type=int, default=None)
    options = parser.parse_args()
    (server if options.list_ttl_ms is None else build(options.list_ttl_ms)).run("stdio")


if __name__ == "__main__":
    main()
