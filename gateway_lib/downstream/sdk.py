"""The mcp client SDK: transports, TLS, list/call helpers, failure kinds; the only importer of mcp, httpx2 and pydantic.

Everything imports the SDK inside itself: `import mcp` costs most of a second, and the
gateway must answer `initialize` before that (see `Downstream.preload`).
"""

from __future__ import annotations

import contextlib
import logging
import functools
import threading
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from ..errors import ServerUnavailable
from ..model import HTTP, SSE, STDIO, ServerSpec

log = logging.getLogger(__name__)

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


async def open_session(
    spec: ServerSpec,
    errlog: TextIO,
    stack: contextlib.AsyncExitStack,
    on_unreadable: Callable[[str], None],
    before_close: Callable[[], None],
) -> Any:
    """Enter the transport of `spec` and a ClientSession on it, on `stack` (not yet initialized).

    `before_close()` runs as the stack unwinds, just before the transport closes (so while
    a stdio server still runs, unless it died on its own), however the session ends.

    `on_unreadable(reason)` is called (in the loop) when the server sends an answer the
    SDK cannot parse (nested too deep, a lone surrogate): the SDK drops such a line, so
    the request it answered would otherwise wait until its deadline.
    """
    from mcp import ClientSession

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception) and (reason := _unreadable_answer(message)) is not None:
            on_unreadable(reason)

    read, write = await _open_transport(spec, errlog, stack)
    stack.callback(before_close)
    return await stack.enter_async_context(ClientSession(read, write, message_handler=on_message))


def _unreadable_answer(exc: Exception) -> str | None:
    """Why a line the SDK could not parse was an answer to a request; None for other garbage.

    Banners and log lines on stdout are skipped, as the SDK skips them; a line shaped like a
    JSON-RPC response (an object with an id and a result or an error) answered something.
    """
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError) or not exc.errors():
        return None
    first = exc.errors(include_url=False)[0]
    line = first.get("input")
    if not isinstance(line, str) or not line.lstrip().startswith("{") or '"id"' not in line:
        return None
    if '"result"' not in line and '"error"' not in line:
        return None
    return str(first.get("msg") or "it is not valid JSON")


async def _open_transport(spec: ServerSpec, errlog: TextIO, stack: contextlib.AsyncExitStack) -> Any:
    """Enter the transport of `spec` on `stack`; returns its (read, write) streams."""
    if spec.transport == STDIO:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        # The SDK gives the child only its minimal environment plus spec.env.
        # A line that is not UTF-8 decodes to U+FFFD and is skipped as any non-JSON line is;
        # "strict" would end the SDK's reader and leave the call waiting for its deadline.
        params = StdioServerParameters(command=spec.command, args=list(spec.args), env=dict(spec.env), cwd=spec.cwd,
                                       encoding_error_handler="replace")
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
    """Every tool of the session's server, following pagination cursors.

    One tool the SDK's models refuse (an inputSchema whose type is not "object", say) does
    not cost the server its other tools: that page is read again as plain JSON, and each
    tool is kept as the SDK parses it, or as sent when it is refused (with a warning).
    """
    from mcp_types import PaginatedRequestParams
    from pydantic import ValidationError

    tools: list[dict] = []
    cursor = None
    while True:
        params = PaginatedRequestParams(cursor=cursor) if cursor else None
        try:
            page = await session.list_tools(params=params)
            tools += [_wire(tool) for tool in page.tools]
            cursor = page.next_cursor
        except ValidationError:
            page_tools, cursor = await _list_page_leniently(session, params)
            tools += page_tools
        if not cursor:
            return tools


# Kept of a tool the SDK refuses: what an agent needs to call it.
_PLAIN_TOOL_KEYS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")


async def _list_page_leniently(session: Any, params: Any) -> tuple[list[dict], str | None]:
    from mcp_types import ListToolsRequest, Tool
    from pydantic import ValidationError

    # No public call of the SDK returns a result it has not validated as a whole, so this
    # takes the two steps send_request takes before validating: stamp, then send.
    request = ListToolsRequest(params=params).model_dump(by_alias=True, mode="json", exclude_none=True)
    options: dict[str, Any] = {}
    session._stamp(request, options)
    page = await session._dispatcher.send_raw_request(request["method"], request.get("params"), options)
    tools = []
    for listed in page.get("tools") if isinstance(page.get("tools"), list) else []:
        if not isinstance(listed, dict) or not isinstance(listed.get("name"), str):
            log.warning("A server listed a tool without a name; it is left out")
            continue
        try:
            tools.append(_wire(Tool.model_validate(listed)))
        except ValidationError as exc:
            log.warning("Tool %r does not match the MCP schema (%d problem(s)); it is listed as sent",
                        listed["name"], exc.error_count())
            tools.append({key: listed[key] for key in _PLAIN_TOOL_KEYS if key in listed})
    cursor = page.get("nextCursor")
    return tools, cursor if isinstance(cursor, str) and cursor else None


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


def classify(exc: BaseException, transport: str) -> Failure | None:
    """What kind of SDK or transport failure `exc` is; None if it is none of them."""
    import httpx2
    from mcp.shared.exceptions import MCPError
    from pydantic import ValidationError

    if isinstance(exc, MCPError) and _closed(exc, transport):
        detail = "" if exc.message == _SDK_CLOSED_MESSAGE else exc.message
        return Failure(CLOSED, detail)
    if isinstance(exc, MCPError):
        return Failure(RPC_ERROR, exc.message, exc.code)
    if isinstance(exc, httpx2.HTTPStatusError):
        return Failure(HTTP_STATUS, f"HTTP {exc.response.status_code}")
    if isinstance(exc, httpx2.HTTPError):
        return Failure(HTTP_FAILED, "connection failed" if isinstance(exc, httpx2.ConnectError) else type(exc).__name__)
    if isinstance(exc, ValidationError):
        return Failure(INVALID)
    return None


_SDK_CLOSED_MESSAGE = "Connection closed"  # what the SDK's dispatcher says when the transport ended


def _closed(exc: Any, transport: str) -> bool:
    """Whether an MCPError says the connection closed, rather than relaying a server's error.

    The SDK reports a closed transport as code -32000 (CONNECTION_CLOSED), a code servers
    use for their own errors too. Over stdio the SDK never makes up an answer, so only its
    dispatcher's own "Connection closed" is a closed connection. Over HTTP its client
    answers a broken stream itself with -32000 and its own words, which cannot be told
    from a server's: every -32000 there counts as closed (the message is kept).
    """
    from mcp_types import CONNECTION_CLOSED

    if exc.code != CONNECTION_CLOSED:
        return False
    return transport != STDIO or exc.message == _SDK_CLOSED_MESSAGE


def is_connection_closed(exc: BaseException, transport: str) -> bool:
    from mcp.shared.exceptions import MCPError

    return isinstance(exc, MCPError) and _closed(exc, transport)
