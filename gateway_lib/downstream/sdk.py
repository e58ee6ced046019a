"""The mcp client SDK: transports, TLS, list/call helpers, failure kinds; the only importer of mcp, httpx2 and pydantic.

Everything imports the SDK inside itself: `import mcp` costs most of a second, and the
gateway must answer `initialize` before that (see `Downstream.preload`).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass
from typing import Any, TextIO

from ..errors import ServerUnavailable
from ..model import HTTP, SSE, STDIO, ServerSpec

# What an SDK or transport failure was, in the gateway's words (see `classify`).
CLOSED = "closed"  # the connection closed (the server exited or hung up)
RPC_ERROR = "rpc-error"  # the server answered with a JSON-RPC error
HTTP_STATUS = "http-status"  # an HTTP endpoint answered with an error status
HTTP_FAILED = "http-failed"  # the HTTP connection itself failed
INVALID = "invalid"  # a message that does not match the protocol's models


@dataclass(frozen=True)
class Failure:
    """One SDK or transport failure, classified; `detail` is the code's message or reason."""

    kind: str
    detail: str = ""
    code: int | None = None


_import_lock = threading.Lock()


def import_client() -> None:
    """Import the SDK client once, under a lock: two threads importing mcp's circular
    modules at the same time see half-initialized modules and fail with ImportError."""
    with _import_lock:
        import httpx2  # noqa: F401
        import mcp.client.session  # noqa: F401
        import mcp.client.sse  # noqa: F401
        import mcp.client.stdio  # noqa: F401
        import mcp.client.streamable_http  # noqa: F401


async def open_session(spec: ServerSpec, errlog: TextIO, stack: contextlib.AsyncExitStack) -> Any:
    """Enter the transport of `spec` and a ClientSession on it, on `stack` (not yet initialized)."""
    from mcp import ClientSession

    read, write = await _open_transport(spec, errlog, stack)
    return await stack.enter_async_context(ClientSession(read, write))


async def _open_transport(spec: ServerSpec, errlog: TextIO, stack: contextlib.AsyncExitStack) -> Any:
    """Enter the transport of `spec` on `stack`; returns its (read, write) streams."""
    if spec.transport == STDIO:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        # The SDK gives the child only its minimal environment plus spec.env.
        params = StdioServerParameters(command=spec.command, args=list(spec.args), env=dict(spec.env), cwd=spec.cwd)
        return await stack.enter_async_context(stdio_client(params, errlog=errlog))
    if spec.transport == HTTP:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        # No client-side timeouts: the caller's deadline bounds the whole call.
        client = httpx2.AsyncClient(headers=dict(spec.headers), timeout=None, verify=tls_context())
        client = await stack.enter_async_context(client)
        return await stack.enter_async_context(streamable_http_client(spec.url, http_client=client))
    if spec.transport == SSE:
        from mcp.client.sse import sse_client

        session = sse_client(spec.url, headers=dict(spec.headers), httpx_client_factory=_sse_http_client)
        return await stack.enter_async_context(session)
    raise ServerUnavailable(f"Server {spec.name!r} has an unknown transport {spec.transport!r}")


@functools.cache
def tls_context() -> Any:
    """One TLS context for every HTTP session, built as httpx2 builds its default one.

    Building it loads the CA store, about 18 ms on these machines: a client made per call
    would pay that on every call, more than half of a whole local HTTP call.
    """
    import httpx2

    return httpx2.create_ssl_context()


def _sse_http_client(headers: dict | None = None, timeout: Any = None, auth: Any = None) -> Any:
    """The SDK's SSE client factory, with the shared TLS context."""
    import httpx2

    return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, verify=tls_context())


async def list_all(session: Any) -> list[dict]:
    """Every tool of the session's server, following pagination cursors."""
    from mcp_types import PaginatedRequestParams

    tools: list[dict] = []
    cursor = None
    while True:
        page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools += [_wire(tool) for tool in page.tools]
        cursor = page.next_cursor
        if not cursor:
            return tools


async def send_call(session: Any, tool: str, arguments: dict) -> dict:
    """One tools/call request, one round trip; the result goes back as the server gave it.

    Not `ClientSession.call_tool`: on a session that has not listed tools it first sends
    its own tools/list to check structuredContent against the tool's outputSchema. That is
    a second round trip on every short-lived session, and a check the gateway's client
    makes itself if it wants to. `send_request` still checks the result's shape.
    """
    from mcp_types import CallToolRequest, CallToolRequestParams, CallToolResult

    request = CallToolRequest(params=CallToolRequestParams(name=tool, arguments=arguments))
    result = _wire(await session.send_request(request, CallToolResult))
    result.pop("resultType", None)  # 2026-only; older clients do not expect it
    return result


def _wire(model: Any) -> dict:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def classify(exc: BaseException) -> Failure | None:
    """What kind of SDK or transport failure `exc` is; None if it is none of them."""
    import httpx2
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED
    from pydantic import ValidationError

    if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
        return Failure(CLOSED)
    if isinstance(exc, MCPError):
        return Failure(RPC_ERROR, exc.message, exc.code)
    if isinstance(exc, httpx2.HTTPStatusError):
        return Failure(HTTP_STATUS, f"HTTP {exc.response.status_code}")
    if isinstance(exc, httpx2.HTTPError):
        return Failure(HTTP_FAILED, "connection failed" if isinstance(exc, httpx2.ConnectError) else type(exc).__name__)
    if isinstance(exc, ValidationError):
        return Failure(INVALID)
    return None


def is_connection_closed(exc: BaseException) -> bool:
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED

    return isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED
