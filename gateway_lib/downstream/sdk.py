"""The mcp client SDK's sessions: transports, TLS, the era probe, list/call helpers, failure kinds.

Over 400 lines for one job: every step of a session that touches the SDK (open, probe, list,
call, recover an unreadable answer's id) stays here, so the SDK boundary is three files, not more.

With `sdk_relay.py` (a call's session callbacks, relayed to the client) and `sdk_oauth.py`
(the SDK's OAuth providers on the gateway's token store), the only importer of mcp, httpx2
and pydantic; `tests/test_downstream_boundaries.py` names the three.

    era probe           server/discover first, falling back to initialize (the SDK's own
                        policy); the verdict is cached per server spec.
    input_required      a 2026-07-28 server's input requests are answered through the
                        call's relay (`sdk_relay.resolve_inputs`); send_call retries with them.

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

from ..errors import DownstreamError, ServerUnavailable
from ..framing import top_level_id
from ..model import HTTP, SSE, STDIO, ServerSpec
from . import loop
from .oauth import SessionAuth
from .opened import count_opened
from .sdk_oauth import oauth_provider
from .sdk_relay import RelayRouter, attach, resolve_inputs, router_of, session_arguments

log = logging.getLogger(__name__)

# What an SDK or transport failure was, in the gateway's words (see `classify`).
CLOSED = "closed"  # the connection closed (the server exited or hung up)
RPC_ERROR = "rpc-error"  # the server answered with a JSON-RPC error
HTTP_STATUS = "http-status"  # an HTTP endpoint answered with an error status
HTTP_FAILED = "http-failed"  # the HTTP connection itself failed
INVALID = "invalid"  # a message that does not match the protocol's models
OAUTH = "oauth"  # the OAuth flow failed (discovery, registration, sign-in, token request)
UNREADABLE = "unreadable"  # an answer the SDK cannot parse (nested too deep, a lone surrogate)


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
    relay: Any = None,
    shared: bool = False,
    auth: SessionAuth | None = None,
) -> Any:
    """Enter the transport of `spec` and a ClientSession on it, on `stack` (not yet initialized).

    The session declares the client capabilities `relay` can relay and sends what the
    server asks of the client to the call in flight: `relay` itself, or (`shared`, a
    kept-alive session) whichever call is newest when the server asks.

    `before_close()` runs as the stack unwinds, just before the transport closes (so while
    a stdio server still runs, unless it died on its own), however the session ends.

    The SDK drops an answer it cannot parse (nested too deep, a lone surrogate), so its
    request would wait for its deadline: it fails at once instead (UNREADABLE), found by
    the line's id; when that cannot be read, `on_unreadable(reason)` decides (in the loop).

    `auth` (OAuth for an http/sse server) becomes the SDK's auth provider on the transport.
    """
    from mcp import ClientSession

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception) and (unread := _unreadable_answer(message)) is not None:
            line, reason = unread
            if not _fail_the_request_answered(session, line, reason):
                on_unreadable(reason)

    router = RelayRouter() if shared else RelayRouter(relay)
    read, write = await _open_transport(spec, errlog, stack, auth)
    count_opened()
    stack.callback(before_close)
    session = ClientSession(read, write, message_handler=on_message, **session_arguments(relay, router))
    session = await stack.enter_async_context(session)
    attach(session, router)
    return session


def _unreadable_answer(exc: Exception) -> tuple[str, str] | None:
    """The line the SDK could not parse and why, if it answered a request; None for garbage.

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
    return line, str(first.get("msg") or "it is not valid JSON")


_UNREADABLE = object()  # marks a request's error for an unreadable answer: no server can send it


def _fail_the_request_answered(session: Any, line: str, reason: str) -> bool:
    """Fail the request `line` answers, found by its id, the way the SDK's dispatcher hands
    it an answer (an id no request waits for is dropped, like a late answer); False when
    the id cannot be read, or this SDK has no such dispatcher."""
    from mcp_types import INTERNAL_ERROR, ErrorData

    request_id = top_level_id(line)
    resolve = getattr(getattr(session, "_dispatcher", None), "_resolve_pending", None)
    if request_id is None or resolve is None:
        return False
    resolve(request_id, ErrorData(code=INTERNAL_ERROR, message=reason, data=_UNREADABLE))
    return True


async def _headers(spec: ServerSpec) -> dict[str, str]:
    """`headers`, with what the entry's headersHelper prints merged over them."""
    if not spec.headers_helper:
        return dict(spec.headers)
    from mcp.client.stdio import get_default_environment

    from ..headers_helper import run_headers_helper

    env = {**get_default_environment(), **spec.env}
    helped = await loop.in_thread(lambda: run_headers_helper(spec.name, spec.headers_helper, env, spec.cwd))
    overridden = {name.lower() for name in helped}  # header names are case-insensitive
    return {**{k: v for k, v in spec.headers.items() if k.lower() not in overridden}, **helped}


async def _open_transport(
    spec: ServerSpec, errlog: TextIO, stack: contextlib.AsyncExitStack, auth: SessionAuth | None = None
) -> Any:
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
        client = httpx2.AsyncClient(headers=await _headers(spec), timeout=None, verify=tls_context(),
                                    auth=oauth_provider(auth),
                                    event_hooks={"response": [auth.observe]} if auth is not None else None)
        client = await stack.enter_async_context(client)
        return await stack.enter_async_context(streamable_http_client(spec.url, http_client=client))
    if spec.transport == SSE:
        from mcp.client.sse import sse_client

        session = sse_client(spec.url, headers=await _headers(spec), httpx_client_factory=_sse_http_client,
                             auth=oauth_provider(auth))
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


MAX_INPUT_ROUNDS = 10  # as the SDK's own driver: a server asking forever cannot hang a call
_LEGACY = "legacy"


# --- the protocol era of a server ---------------------------------------------------------

_eras: dict[str, tuple[ServerSpec, Any]] = {}  # server name -> (spec, DiscoverResult or _LEGACY)
_eras_lock = threading.Lock()


async def handshake(session: Any, spec: ServerSpec) -> None:
    """Open the session in the server's era: probed once per spec, then remembered."""
    from mcp.client._probe import negotiate_auto

    with _eras_lock:
        known = _eras.get(spec.name)
    verdict = known[1] if known is not None and known[0] == spec else None
    if verdict is _LEGACY:
        await session.initialize()
        return
    if verdict is not None:
        session.adopt(verdict)
        return
    await negotiate_auto(session)  # server/discover, falling back to initialize
    with _eras_lock:
        _eras[spec.name] = (spec, session.discover_result or _LEGACY)


def is_modern(session: Any) -> bool:
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    return session.protocol_version in MODERN_PROTOCOL_VERSIONS


# --- requests ------------------------------------------------------------------------------


class ListedTools(list):
    """A server's tools; `ttl_ms` is the server's own cache hint (2026-07-28), else None."""

    ttl_ms: int | None = None


async def list_all(session: Any) -> ListedTools:
    """Every tool of the session's server, following cursors; a 2026 server's as it sent them.

    One tool the SDK's models refuse (an inputSchema whose type is not "object", say) does
    not cost the server its other tools: that page is read again as plain JSON, and each
    tool is kept as the SDK parses it, or as sent when it is refused (with a warning).
    """
    from mcp_types import ListToolsRequest, PaginatedRequestParams
    from pydantic import ValidationError

    modern = is_modern(session)
    tools = ListedTools()
    cursor = None
    while True:
        params = PaginatedRequestParams(cursor=cursor) if cursor else None
        if modern:
            # Raw: 2026 tool definitions (any JSON Schema, new fields) pass through unchanged.
            page = await session.send_request(ListToolsRequest(params=params), _raw())
            tools += [tool for tool in page.get("tools", []) if isinstance(tool, dict)]
            if tools.ttl_ms is None and isinstance(page.get("ttlMs"), int):
                tools.ttl_ms = page["ttlMs"]
            cursor = page.get("nextCursor")
        else:
            try:
                result = await session.list_tools(params=params)
                tools += [_wire(tool) for tool in result.tools]
                cursor = result.next_cursor
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


async def send_call(session: Any, tool: str, arguments: dict, relay: Any = None) -> dict:
    """One tools/call request (plus a 2026 server's input_required rounds); the result as the server gave it.

    Not `ClientSession.call_tool`: on a session that has not listed tools it first sends
    its own tools/list to check structuredContent against the tool's outputSchema. That is
    a second round trip on every short-lived session, and a check the gateway's client
    makes itself if it wants to. `send_request` still checks the result's shape.
    The client's `_meta` (but its progress token) goes along; progress comes back to the relay.
    """
    from mcp_types import CallToolRequest, CallToolRequestParams, CallToolResult

    meta = dict(relay.link.meta) if relay is not None and relay.link.meta else None
    progress = _progress_callback(relay)
    responses = state = None
    with router_of(session).serving(relay):
        for _ in range(MAX_INPUT_ROUNDS + 1):
            params = CallToolRequestParams(name=tool, arguments=arguments, _meta=meta,
                                           input_responses=responses, request_state=state)
            answer = await session.send_request(CallToolRequest(params=params), _raw(), progress_callback=progress)
            if answer.get("resultType") != "input_required":
                result = _wire(CallToolResult.model_validate(answer, by_name=False))
                result.pop("resultType", None)  # the gateway's protocol layer adds it for 2026 clients only
                return result
            # The retry carries the client's answers and the server's requestState unchanged.
            responses, state = await resolve_inputs(session, relay, answer), answer.get("requestState")
    raise DownstreamError(f"Tool {tool!r} asked for input more than {MAX_INPUT_ROUNDS} times")


def _progress_callback(relay: Any) -> Any:
    if relay is None:
        return None

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        relay.progress(progress, total, message)

    return on_progress


@functools.cache
def _raw() -> Any:
    """A result type that keeps the server's JSON as it came (after the SDK's shape check)."""
    from pydantic import TypeAdapter

    return TypeAdapter(dict[str, Any])


def _wire(model: Any) -> dict:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def classify(exc: BaseException, transport: str) -> Failure | None:
    """What kind of SDK or transport failure `exc` is; None if it is none of them."""
    import httpx2
    from mcp.shared.exceptions import MCPError
    from pydantic import ValidationError

    if isinstance(exc, MCPError) and exc.data is _UNREADABLE:
        return Failure(UNREADABLE, exc.message)
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
    from mcp.client.auth import OAuthFlowError, OAuthRegistrationError, OAuthTokenError

    from ..oauth_signin import SignInFailed

    if isinstance(exc, SignInFailed):
        return Failure(OAUTH, str(exc))  # our own sentences: no secret in them
    # The SDK's messages may quote a token endpoint's answer: name the step only.
    if isinstance(exc, OAuthRegistrationError):
        return Failure(OAUTH, "the client registration failed")
    if isinstance(exc, OAuthTokenError):
        return Failure(OAUTH, "the token request failed")
    if isinstance(exc, OAuthFlowError):
        return Failure(OAUTH, "the authorization flow failed")
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
